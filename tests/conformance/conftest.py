"""Fixtures of the conformance self-tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.testing.loop import LARGE_XATTRS, loop_filesystem_or_unavailable


@pytest.fixture(scope="session")
def ext4_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 for the session: room for the crash tests (many files) and xattrs up to 64 KiB."""
    workdir = tmp_path_factory.mktemp("selftest-ext4")
    with loop_filesystem_or_unavailable("vfs", workdir, "ext4", 1024, LARGE_XATTRS["ext4"]) as mnt:
        yield mnt
