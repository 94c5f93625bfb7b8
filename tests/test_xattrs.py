"""layerstore.xattrs on a real filesystem: whole values, fds, symlinks, absent attributes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from layerstore.xattrs import get_xattr, has_xattr, list_xattrs, read_xattrs


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


def test_has_xattr_and_empty_lists(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    _user_xattrs_or_skip(f)
    (tmp_path / "link").symlink_to("f")
    assert list_xattrs(f) == [] and read_xattrs(f) == {}
    assert not has_xattr(f, "user.v")
    os.setxattr(f, "user.v", b"1" * 300)  # longer than os.getxattr's first buffer
    assert has_xattr(f, "user.v") and has_xattr(str(f), "user.v")
    assert not has_xattr(tmp_path / "link", "user.v")
    assert has_xattr(tmp_path / "link", "user.v", follow_symlinks=True)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert has_xattr(fd, "user.v") and not has_xattr(fd, "user.other")
        assert list_xattrs(fd) == ["user.v"]
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        has_xattr(tmp_path / "missing", "user.v")
    assert info.value.errno == errno.ENOENT


def test_reading_no_xattr_does_not_load_ctypes(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "f").write_bytes(b"x")
    code = ("import sys; from layerstore.xattrs import has_xattr, list_xattrs, read_xattrs; "
            f"p = {str(tmp_path / 'f')!r}; "
            "assert list_xattrs(p) == [] and read_xattrs(p) == {} and not has_xattr(p, 'user.x'); "
            "print('ctypes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
