"""Fixtures of the conformance self-tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.testing.loop import loop_filesystem_or_unavailable


@pytest.fixture(scope="session")
def ext4_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 for the session: the crash tests create tens of thousands of files."""
    with loop_filesystem_or_unavailable("vfs", tmp_path_factory.mktemp("selftest-ext4"), "ext4", 1024) as mnt:
        yield mnt
