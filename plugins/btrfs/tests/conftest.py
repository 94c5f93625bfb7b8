"""Fixtures of the btrfs driver tests: real loop-mounted btrfs filesystems, torn down even when tests fail."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _private_btrfs(workdir: Path, size_mb: int) -> Iterator[Path]:
    """A loop-mounted btrfs of its own in `workdir`, made with mkfs's defaults; fails if anything is left after."""
    with loop_filesystem_or_unavailable("btrfs", workdir / "loop", "btrfs", size_mb) as mnt:
        yield mnt
    leftovers = mounts_under(workdir) + loop_devices_under(workdir)
    if leftovers:
        pytest.fail(f"the btrfs test filesystem was not torn down: {leftovers}")


@pytest.fixture
def plain_btrfs(tmp_path: Path) -> Iterator[Path]:
    """A private 1 GiB btrfs with default nodes (the shared one has 64 KiB nodes for big xattrs)."""
    with _private_btrfs(tmp_path, 1024) as mnt:
        yield mnt


@pytest.fixture
def small_btrfs(tmp_path: Path) -> Iterator[Path]:
    """A private 256 MiB loop-mounted btrfs for tests that remount or fill it."""
    with _private_btrfs(tmp_path, 256) as mnt:
        yield mnt


@pytest.fixture
def btrfs_home(btrfs_mount: Path) -> Path:
    """A fresh, not yet existing driver home on the shared btrfs."""
    base = btrfs_mount / "homes"
    base.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base)) / "btrfs"
