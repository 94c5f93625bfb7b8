"""layerstore.xattrs on a real filesystem: whole values, fds, symlinks, absent attributes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from layerstore.xattrs import get_xattr, list_xattrs, read_xattrs


def _user_xattrs_or_skip(path: Path) -> None:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError as exc:
        pytest.skip(f"user xattrs not supported on {path}: {exc.strerror}")
    os.removexattr(path, "user.probe")


def test_values_paths_and_fds(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    _user_xattrs_or_skip(f)
    value = bytes(range(256)) * 8  # 2 KiB, fits an ext4 block; past Python's first 128-byte buffer
    os.setxattr(f, "user.big", value)
    os.setxattr(f, "user.empty", b"")
    assert get_xattr(f, "user.big") == value
    assert get_xattr(str(f), "user.empty") == b""
    assert sorted(list_xattrs(f)) == ["user.big", "user.empty"]
    fd = os.open(f, os.O_RDONLY)
    try:
        assert get_xattr(fd, "user.big") == value
        assert read_xattrs(fd) == {"user.big": value, "user.empty": b""}
    finally:
        os.close(fd)


def test_absent_attribute_and_symlinks(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    _user_xattrs_or_skip(f)
    os.setxattr(f, "user.t", b"target")
    (tmp_path / "link").symlink_to("f")
    with pytest.raises(OSError) as info:
        get_xattr(f, "user.none")
    assert info.value.errno == errno.ENODATA
    assert info.value.filename == f
    assert read_xattrs(tmp_path / "link") == {}  # user.* cannot be set on a symlink itself
    assert get_xattr(tmp_path / "link", "user.t", follow_symlinks=True) == b"target"
    assert list_xattrs(tmp_path / "link", follow_symlinks=True) == ["user.t"]
