"""The mount table reader finds real mounts, also at paths that mountinfo has to escape."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.config import backing_filesystem
from layerstore.mountinfo import mount_of, read_mountinfo, unescape


def test_unescape_octal_fields() -> None:
    assert unescape(r"/mnt/a\040b\011c\134d") == "/mnt/a b\tc\\d"
    assert unescape("/plain") == "/plain"


@pytest.fixture
def spaced_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    target = tmp_path / "with space\tand tab"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "lstest", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_mount_of_a_path_with_escaped_characters(spaced_tmpfs: Path) -> None:
    inner = spaced_tmpfs / "not-yet" / "created"
    entry = mount_of(inner)
    assert entry is not None
    assert (entry.mountpoint, entry.fstype, entry.source) == (str(spaced_tmpfs), "tmpfs", "lstest")
    assert backing_filesystem(inner) == "tmpfs"
    assert mount_of(inner, fstype="no-such-fs") is None
    assert any(e.mountpoint == str(spaced_tmpfs) for e in read_mountinfo())
