"""The shared driver conformance suite, run against vfs with each way of copying file data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from layerstore import Driver
from layerstore.conformance import DriverConformance
from layerstore.conformance.requirements import Requirement, Requirements


class CrashTestedElsewhere(Requirements):
    """The copy-method variants skip the (slow) crash tests: TestVfsConformance runs them."""

    @property
    def crash_tests(self) -> Requirement:
        """Not met: the crash tests run once, in TestVfsConformance."""
        return Requirement("crash-tests", False, "vfs crash safety is tested once, by TestVfsConformance")


class _OnExt4(DriverConformance):
    """Driver homes on the session's loop-mounted ext4 (it holds 60 KiB xattrs; the root filesystem does not)."""

    @pytest.fixture
    def layerstore_root(self, ext4_mount: Path) -> Path:
        """A fresh directory on the session's ext4."""
        return Path(tempfile.mkdtemp(dir=ext4_mount))


class TestVfsConformance(_OnExt4):
    """Every conformance test; the data copy method is chosen automatically (copy_file_range on ext4)."""

    driver_name = "vfs"


class TestVfsReadWriteCopy(_OnExt4):
    """The portable fallback: a read/write loop."""

    driver_name = "vfs"
    driver_options = {"copy": "read"}
    requirements = CrashTestedElsewhere


class TestVfsSendfileCopy(_OnExt4):
    """The sendfile fallback."""

    driver_name = "vfs"
    driver_options = {"copy": "sendfile"}
    requirements = CrashTestedElsewhere


class TestVfsOnBtrfs(DriverConformance):
    """On a loop-mounted btrfs, where children share file data with their parent through reflinks."""

    driver_name = "vfs"
    requirements = CrashTestedElsewhere

    @pytest.fixture
    def layerstore_root(self, btrfs_mount: Path) -> Path:
        """Driver homes on the session's btrfs."""
        return Path(tempfile.mkdtemp(dir=btrfs_mount))

    def test_reflink_is_used(self, driver: Driver) -> None:
        """vfs declares reflink support on btrfs and copies with FICLONE."""
        assert driver.capabilities.reflink
        assert ("Copy Method", "reflink") in driver.status()
        assert ("Backing Filesystem", "btrfs") in driver.status()
