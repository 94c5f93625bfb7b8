"""Fixtures of the vfs driver's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.testing.loop import LARGE_XATTRS, loop_filesystem_or_unavailable


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted btrfs for the session (reflink copies); unmounted and detached at the end."""
    workdir = tmp_path_factory.mktemp("vfs-btrfs")
    with loop_filesystem_or_unavailable("vfs", workdir, "btrfs", 256, LARGE_XATTRS["btrfs"]) as mnt:
        yield mnt


@pytest.fixture(scope="session")
def ext4_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 for the session: xattrs up to 64 KiB (the root filesystem's ext4 has no room
    for them), and room for the crash tests' tens of thousands of files."""
    workdir = tmp_path_factory.mktemp("vfs-ext4")
    with loop_filesystem_or_unavailable("vfs", workdir, "ext4", 1024, LARGE_XATTRS["ext4"]) as mnt:
        yield mnt

