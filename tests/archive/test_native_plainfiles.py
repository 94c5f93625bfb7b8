"""Runs of plain small files taken natively (``layerstore_accel.take_plain_files``): the same layer, the same record.

When ``layerstore-accel`` is installed, the extraction of a new layer lets
the native code take each run of plain small regular files (the common header
shape, a clean name in a directory the extraction has made, our own owner, a
mode ``open`` gives as it is) and takes every other member in Python.  Each
archive here is extracted twice with the file pool, with and without that
function, fed in random short reads; the trees, the sizes, the errors and the
contents set aside for the export (by member number) must be the same, and
the native code must take most plain members (else these tests would compare
Python with itself) and leave the others.  `tests/archive/test_filepool.py`'s
archives are extracted both ways too (that module itself runs where the
native code is not installed).
"""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import snapshot
from test_filepool import ARCHIVES as POOL_ARCHIVES
from test_filepool import _tar as pool_tar

from layerstore.archive import _accel
from layerstore.archive.apply import apply_tar
from layerstore.archive.aside import setting_aside
from layerstore.errors import LayerStoreError

pytestmark = pytest.mark.integration  # run where layerstore-accel is installed (tox's integration environment)

_ARCHIVE_TIMES_END = 1_700_000_000 * 10**9  # every time in these archives is earlier


class _ShortReads(io.RawIOBase):
    """A stream that hands out the data in random short reads (the reader's buffer then cuts members anywhere)."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        n = min(len(view), len(self._data) - self._pos, self._random.choice([1, 700, 5000, 70_000, 1 << 20]))
        view[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.fixture
def native(require_accel: Callable[[Any, str], Any], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The native function, wrapped to count the members it takes (the list's one element)."""
    take = require_accel(_accel.take_plain_files, "take_plain_files")
    taken = [0]

    def counting(*args: Any) -> Any:
        run = take(*args)
        if run is not None:
            taken[0] += run[1]
        return run

    monkeypatch.setattr(_accel, "take_plain_files", counting)
    return taken


def _tree(root: Path) -> dict[bytes, tuple[object, ...]]:
    """`snapshot` with the access times of files, without the times of directories created on the way."""
    atimes = {}  # of regular files, before `snapshot` reads them (which may set their access times)
    for top, _, files in os.walk(os.fsencode(root)):
        for name in files:
            st = os.lstat(os.path.join(top, name))
            if stat.S_ISREG(st.st_mode):
                atimes[os.path.relpath(os.path.join(top, name), os.fsencode(root))] = st.st_atime_ns
    return {
        rel: (*fields[:4], fields[4] if fields[4] < _ARCHIVE_TIMES_END else None, *fields[5:], atimes.get(rel))  # type: ignore[operator]
        for rel, fields in snapshot(root, skip_root=True).items()
    }


def _extract(data: bytes, dest: Path, seed: int) -> object:
    dest.mkdir()
    with setting_aside(dest.parent / f"{dest.name}-aside") as aside:
        try:
            size = apply_tar(_ShortReads(data, seed), dest, file_threads=2)  # type: ignore[arg-type]
        except LayerStoreError as exc:
            return type(exc), str(exc).replace(dest.name, "DEST")
        kept = {index: path.read_bytes() for index, path in aside.kept.items()}
    return size, _tree(dest), kept


def _both(data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> tuple[object, object]:
    """(with the native function, without it) for the archive `data`."""
    with_native = _extract(data, tmp_path / "native", seed)
    with monkeypatch.context() as m:
        m.setattr(_accel, "take_plain_files", None)
        without = _extract(data, tmp_path / "python", seed)
    return with_native, without


def _tar(members: list[tuple[str, bytes, bytes, dict[str, Any]]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, kind, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.mtime = 1_600_000_000
            for key, value in attrs.items():
                setattr(info, key, value)
            if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _plain_layer(dirs: int, files: int) -> list[tuple[str, bytes, bytes, dict[str, Any]]]:
    members: list[tuple[str, bytes, bytes, dict[str, Any]]] = [("top", tarfile.REGTYPE, b"at the root", {})]
    for d in range(dirs):
        members.append((f"d{d}", tarfile.DIRTYPE, b"", {}))
        for f in range(files):
            members.append((f"d{d}/f{f}", tarfile.REGTYPE, os.urandom(f * 37 % 3000), {"mtime": 1_500_000_000 + f}))
    return members


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_a_layer_of_plain_files_is_taken_natively_and_comes_out_the_same(
    fmt: int, native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _plain_layer(dirs=5, files=200)
    with_native, without = _both(_tar(members, fmt), tmp_path, monkeypatch)
    assert with_native == without
    assert isinstance(with_native, tuple) and len(with_native[1]) == 1 + 5 + 1000  # type: ignore[arg-type]
    assert native[0] >= 900  # all but the members a short read cuts (those come whole from Python)


# Members among plain files: ones the native code must leave to Python, and ones at its edges.
_UNUSUAL: dict[str, list[tuple[str, bytes, bytes, dict[str, Any]]]] = {
    "a name with ./": [("./d0/dot", tarfile.REGTYPE, b"x", {})],
    "a name with //": [("d0//double", tarfile.REGTYPE, b"x", {})],
    "a trailing slash": [("d0/slash/", tarfile.AREGTYPE, b"", {})],
    "a .. component": [("d0/../up", tarfile.REGTYPE, b"x", {})],
    "a final .. component": [("d0/..", tarfile.REGTYPE, b"x", {})],
    "a final . component": [("d0/.", tarfile.REGTYPE, b"x", {})],
    "a ustar name prefix": [
        ("d0/" + "p" * 60, tarfile.DIRTYPE, b"", {}),
        ("d0/" + "p" * 60 + "/" + "n" * 60, tarfile.REGTYPE, b"x", {}),
    ],
    "an absolute name": [("/abs", tarfile.REGTYPE, b"x", {})],
    "a whiteout": [("d0/.wh.f3", tarfile.REGTYPE, b"", {})],
    "an opaque marker": [("d0/.wh..wh..opq", tarfile.REGTYPE, b"", {})],
    "a name that is not ASCII": [("d0/caf\u00e9", tarfile.REGTYPE, b"x", {})],
    "a setuid file": [("d0/suid", tarfile.REGTYPE, b"x", {"mode": 0o4755})],
    "a mode the umask cuts": [("d0/open", tarfile.REGTYPE, b"x", {"mode": 0o666})],
    "another owner": [(f"d0/theirs{i}", tarfile.REGTYPE, b"x", {"uid": 1000, "gid": 1000}) for i in range(2)],
    "a file over 64 KiB": [("d0/big", tarfile.REGTYPE, b"b" * (64 * 1024 + 1), {})],
    "a file of exactly 64 KiB": [("d0/edge", tarfile.REGTYPE, b"e" * (64 * 1024), {})],
    "an empty file": [("d0/empty", tarfile.REGTYPE, b"", {})],
    "a file in a new directory": [("new/dir/file", tarfile.REGTYPE, b"x", {})],
    "the same name again": [("d0/f1", tarfile.REGTYPE, b"again", {})],
    "a file over a directory": [("d1", tarfile.REGTYPE, b"x", {})],
    "a file over a directory made on the way": [
        ("new/x", tarfile.REGTYPE, b"x", {}),
        ("new/dir/file", tarfile.REGTYPE, b"x", {}),
        ("new/dir", tarfile.REGTYPE, b"x", {}),
    ],
    "a long name": [("d0/" + "n" * 150, tarfile.REGTYPE, b"x", {})],
    "a pax header": [("d0/pax", tarfile.REGTYPE, b"x", {"pax_headers": {"comment": "not a time"}})],
    "pax times": [
        ("d0/times", tarfile.REGTYPE, b"x", {"pax_headers": {
            "atime": "1500000000.123456789123", "ctime": "1500000001.5", "mtime": "1400000000.25"}}),
        ("d0/whole", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": "1500000000", "mtime": "1."}}),
        ("d0/twice", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": "5", "ctime": "6"}}),
    ],
    "pax times of unusual shapes": [
        ("d0/empty-mtime", tarfile.REGTYPE, b"x", {"pax_headers": {"mtime": "", "atime": "7"}}),
        ("d0/no-whole", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": ".5"}}),
        ("d0/negative", tarfile.REGTYPE, b"x", {"pax_headers": {"mtime": "-1.5"}}),
        ("d0/late", tarfile.REGTYPE, b"x", {"pax_headers": {"mtime": "99999999999"}}),
        ("d0/odd", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": "1.5x"}}),
    ],
    "a pax time with a comma": [("d0/comma", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": "1,5"}})],
    "a pax time and a path": [
        ("d0/renamed", tarfile.REGTYPE, b"x", {"pax_headers": {"atime": "1", "path": "d1/moved"}}),
    ],
    "a pax time on a directory": [("d0/pdir", tarfile.DIRTYPE, b"", {"pax_headers": {"atime": "1"}})],
    "a contiguous file": [("d0/cont", tarfile.CONTTYPE, b"", {})],
    "a time past 2^33 s": [("d0/late", tarfile.REGTYPE, b"x", {"mtime": 8**11 + 5})],
    "a file through a symlink": [("l", tarfile.SYMTYPE, b"", {"linkname": "d1"}), ("l/via", tarfile.REGTYPE, b"x", {})],
    "a hardlink to a file taken": [("d0/hard", tarfile.LNKTYPE, b"", {"linkname": "d0/f2"})],
    "a directory over a file taken": [("d0/f4", tarfile.DIRTYPE, b"", {})],
    "a whiteout of a file taken": [("d1/.wh.f5", tarfile.REGTYPE, b"", {})],
    # Files created in a setgid directory would take its group: the Python code gives them their own.
    "a setgid directory of another group": [("d1", tarfile.DIRTYPE, b"", {"mode": 0o2755, "gid": 1000})],
}


@pytest.mark.parametrize("case", list(_UNUSUAL))
def test_an_unusual_member_among_plain_files_comes_out_the_same(
    case: str, native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = _plain_layer(dirs=2, files=10)
    members[13:13] = _UNUSUAL[case]
    members += _UNUSUAL[case]  # again at the end, after the run
    members += [(f"d1/tail{i}", tarfile.REGTYPE, b"t" * i, {}) for i in range(5)]
    fmt = tarfile.PAX_FORMAT if "pax" in case or "ASCII" in case else tarfile.GNU_FORMAT
    fmt = tarfile.USTAR_FORMAT if "ustar" in case else fmt
    with_native, without = _both(_tar(members, fmt), tmp_path, monkeypatch)
    assert with_native == without
    assert native[0] >= 5  # the run before the member (an unsafe one ends the extraction there)


@pytest.mark.parametrize("case", list(POOL_ARCHIVES))
def test_the_file_pools_archives_come_out_the_same(
    case: str, native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`test_filepool`'s archives (entries aimed at files still in the pool), both ways."""
    with_native, without = _both(pool_tar(POOL_ARCHIVES[case]), tmp_path, monkeypatch)
    assert with_native == without


def test_random_archives_come_out_the_same(native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261207)
    unusual = list(_UNUSUAL.values())
    for round_ in range(60):
        members = _plain_layer(dirs=rng.randint(1, 3), files=rng.randint(1, 40))
        for _ in range(rng.randint(0, 8)):
            at = rng.randint(0, len(members))
            members[at:at] = rng.choice(unusual)
        fmt = rng.choice([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
        try:
            data = _tar(members, fmt)
        except ValueError:  # a member this format cannot hold (a long name in ustar)
            continue
        case = tmp_path / str(round_)
        case.mkdir()
        with_native, without = _both(data, case, monkeypatch, seed=round_)
        assert with_native == without, f"round {round_}"
    assert native[0] > 1000


def test_a_layer_rooted_at_a_long_path_leaves_files_beyond_the_path_limit_to_python(
    native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root the layer so that 60 bytes are left below the path limit (1,024) for "d/<name>".
    deep = tmp_path / "x"
    while len(os.fsencode(deep)) < 1024 - 60 - 250:
        deep = deep / ("p" * 200)
    deep = deep / ("q" * (1024 - 60 - len(os.fsencode(deep)) - 1 - len("/native/")))
    deep.mkdir(parents=True)
    members: list[tuple[str, bytes, bytes, dict[str, Any]]] = [("d", tarfile.DIRTYPE, b"", {})]
    members += [(f"d/{'f' * (40 + i)}", tarfile.REGTYPE, b"x" * i, {}) for i in range(40)]
    with_native, without = _both(_tar(members), deep, monkeypatch)
    assert with_native == without
    assert isinstance(with_native, tuple) and len(with_native[1]) == 41  # type: ignore[arg-type]
    assert 5 <= native[0] <= 25  # the short names natively, the rest in Python


def test_a_layer_written_by_gnu_tar_in_posix_format_is_taken_natively(
    native: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GNU tar's posix format gives every member a pax header with its atime and ctime."""
    import subprocess

    source = tmp_path / "source"
    for d in range(3):
        (source / f"d{d}").mkdir(parents=True)
        for f in range(100):
            path = source / f"d{d}" / f"f{f}"
            path.write_bytes(os.urandom(f * 13))
            os.utime(path, ns=(1_500_000_000_123_456_789 + f, 1_400_000_000_987_654_321 + f))
    data = subprocess.run(["tar", "--format=posix", "--numeric-owner", "-C", str(source), "-cf", "-", "d0", "d1", "d2"],
                          check=True, capture_output=True).stdout
    case = tmp_path / "x"
    case.mkdir()
    with_native, without = _both(data, case, monkeypatch)
    assert with_native == without
    assert native[0] >= 270  # all but the first file of each directory and those a short read cuts
