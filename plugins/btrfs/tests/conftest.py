"""Fixtures of the btrfs driver tests: real loop-mounted btrfs filesystems, torn down even when tests fail."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.testing.loop import LARGE_XATTRS, loop_devices_under, loop_filesystem_or_unavailable, mounts_under

BTRFS_SIZE_MB = 1024  # sparse: costs only what the tests write


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted btrfs shared by the session; checks afterwards that no mount or loop device is left."""
    workdir = tmp_path_factory.mktemp("btrfs-loop")
    with loop_filesystem_or_unavailable("btrfs", workdir, "btrfs", BTRFS_SIZE_MB, LARGE_XATTRS["btrfs"]) as mnt:
        yield mnt
    leftovers = mounts_under(workdir) + loop_devices_under(workdir)
    if leftovers:
        pytest.fail(f"the btrfs test filesystem was not torn down: {leftovers}")


@pytest.fixture
def small_btrfs(tmp_path: Path) -> Iterator[Path]:
    """A private 256 MiB loop-mounted btrfs for tests that remount or fill it."""
    with loop_filesystem_or_unavailable("btrfs", tmp_path / "loop", "btrfs", 256) as mnt:
        yield mnt
    leftovers = mounts_under(tmp_path) + loop_devices_under(tmp_path)
    if leftovers:
        pytest.fail(f"the btrfs test filesystem was not torn down: {leftovers}")


@pytest.fixture
def btrfs_home(btrfs_mount: Path) -> Path:
    """A fresh, not yet existing driver home on the shared btrfs."""
    base = btrfs_mount / "homes"
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base)) / "btrfs"
