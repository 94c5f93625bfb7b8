"""Diffs travel between drivers: a diff exported by one driver applies on another with the same result."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import Driver, available_drivers, load_driver
from layerstore.errors import DriverNotSupported
from layerstore.testing import unavailable

pytestmark = pytest.mark.integration

BASE = "b" * 64
CHILD = "c" * 64


def _open(name: str, home: Path) -> Driver:
    if name not in available_drivers():
        unavailable(name, f"the layerstore-{name} distribution is not installed")
    try:
        return load_driver(name, home)
    except DriverNotSupported as exc:
        unavailable(name, str(exc))


@pytest.fixture
def drivers(tmp_path: Path) -> Iterator[dict[str, Driver]]:
    opened = {name: _open(name, tmp_path / name) for name in ("vfs", "overlay")}
    yield opened
    for driver in opened.values():
        for layer in (CHILD, BASE):
            if driver.exists(layer):
                driver.remove(layer, force=True)
        driver.cleanup()


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _base_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o644)
        _member(tar, "etc/gone", b"bye\n", mode=0o600, uid=12, gid=34)
        _member(tar, "opt", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "opt/old", type=tarfile.DIRTYPE, mode=0o700)
        _member(tar, "opt/old/a", b"a\n")
        _member(tar, "bin", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "bin/tool", b"\x7fELF" + bytes(5000), mode=0o4755)
        _member(tar, "bin/link", type=tarfile.SYMTYPE, linkname="tool")
        _member(tar, "bin/hard", type=tarfile.LNKTYPE, linkname="bin/tool")
        _member(tar, "pipe", type=tarfile.FIFOTYPE, mode=0o600)
        info = tarfile.TarInfo("caps")
        info.size = 3
        info.pax_headers = {"SCHILY.xattr.user.note": "hello"}
        tar.addfile(info, io.BytesIO(b"cap"))
    return buf.getvalue()


def _child_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "etc", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "etc/.wh.gone")
        _member(tar, "etc/passwd", b"root:x:0:0::/root:/bin/bash\n", mode=0o644)
        _member(tar, "opt", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "opt/old", type=tarfile.DIRTYPE, mode=0o755)
        _member(tar, "opt/old/.wh..wh..opq")
        _member(tar, "opt/old/b", b"b\n")
        _member(tar, "new", b"new file\n", mode=0o640, uid=1000, gid=1000)
    return buf.getvalue()


def _snapshot(root: str) -> dict[str, tuple[object, ...]]:
    """Everything a user can observe of a tree, keyed by relative path."""
    seen: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            names = os.listxattr(path, follow_symlinks=False)
            xattrs = tuple(sorted((k, os.getxattr(path, k, follow_symlinks=False)) for k in names))
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = Path(path).read_bytes()
                first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                content = (content, first if first != rel else None)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns // 1_000_000_000
            seen[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, mtime, content, xattrs)
    return seen


def _build(driver: Driver) -> None:
    driver.create(BASE, None)
    driver.apply_diff(BASE, None, io.BytesIO(_base_tar()))
    driver.create(CHILD, BASE)
    driver.apply_diff(CHILD, BASE, io.BytesIO(_child_tar()))


@pytest.mark.parametrize(("source", "target"), [("overlay", "vfs"), ("vfs", "overlay")])
def test_diff_from_one_driver_applies_on_the_other(drivers: dict[str, Driver], source: str, target: str) -> None:
    src, dst = drivers[source], drivers[target]
    _build(src)
    dst.create(BASE, None)
    with src.diff(BASE, None) as stream:
        dst.apply_diff(BASE, None, stream)
    dst.create(CHILD, BASE)
    with src.diff(CHILD, BASE) as stream:
        dst.apply_diff(CHILD, BASE, stream)

    for layer in (BASE, CHILD):
        with src.mounted(layer) as a, dst.mounted(layer) as b:
            expected, got = _snapshot(a), _snapshot(b)
            assert got == expected, f"layer {layer[:12]} differs between {source} and {target}"
    with dst.mounted(CHILD) as path:
        assert not os.path.lexists(os.path.join(path, "etc/gone"))
        assert sorted(os.listdir(os.path.join(path, "opt/old"))) == ["b"]
