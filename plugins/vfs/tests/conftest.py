"""Fixtures of the vfs driver's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.testing.loop import loop_filesystem_or_unavailable


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted btrfs for the session (reflink copies); unmounted and detached at the end."""
    with loop_filesystem_or_unavailable("vfs", tmp_path_factory.mktemp("vfs-btrfs"), "btrfs", 256) as mnt:
        yield mnt


@pytest.fixture(scope="session")
def ext4_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 for the session (the crash tests create tens of thousands of files)."""
    with loop_filesystem_or_unavailable("vfs", tmp_path_factory.mktemp("vfs-ext4"), "ext4", 1024) as mnt:
        yield mnt
