"""Small files on helper threads (`layerstore.archive._filepool`): the same layer, the same errors, as without them.

Every archive here is extracted into a new layer twice, with the file pool
(``file_threads=2``: the native batch creator when ``layerstore-accel`` is
installed, Python on the threads otherwise) and without it (``file_threads=0``),
and the two trees (or the two errors) must be identical.  The archives put
entries where a file still in the pool would show: the same path again, a path
below it, a hardlink to it, a link resolved into it, a whiteout of it.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import TarBuilder, snapshot

from layerstore.archive import _filepool
from layerstore.archive.apply import apply_tar
from layerstore.errors import LayerStoreError

#: (name, tar type, data, TarInfo attributes) for `TarBuilder.add`.
Member = tuple[str, bytes, bytes, dict[str, object]]
_ARCHIVE_TIMES_END = 1_700_000_000 * 10**9  # every time in these archives is earlier
_FILE, _DIR, _SYMLINK, _HARDLINK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def _tar(members: list[Member]) -> bytes:
    tar = TarBuilder()
    for name, kind, data, attrs in members:
        tar.add(name, kind, data, **attrs)
    return tar.bytes()


def _tree(root: Path) -> dict[bytes, tuple[object, ...]]:
    """`snapshot`, without the times of directories created on the way (they get the extraction's time)."""
    return {
        rel: (*fields[:4], fields[4] if fields[4] < _ARCHIVE_TIMES_END else None, *fields[5:])  # type: ignore[operator]
        for rel, fields in snapshot(root, skip_root=True).items()
    }


def _extract_both(data: bytes, tmp_path: Path) -> tuple[object, object]:
    results = []
    for threads in (0, 2):
        dest = tmp_path / f"threads-{threads}"
        dest.mkdir()
        try:
            size = apply_tar(io.BytesIO(data), dest, file_threads=threads)
        except LayerStoreError as exc:
            results.append((type(exc), str(exc).replace(f"threads-{threads}", "DEST")))
        else:
            results.append((size, _tree(dest)))
    return results[0], results[1]


def _many_small(prefix: str = "d", dirs: int = 6, files: int = 40) -> list[Member]:
    """Directories of small files; with 40 files the last 8 of each (f32-f39) are still in the pool's
    unsent batch when the next entry comes, so an entry aimed at f39 meets a file surely not created yet."""
    members: list[Member] = []
    for d in range(dirs):
        members.append((f"{prefix}{d}", _DIR, b"", {}))
        for f in range(files):
            members.append((f"{prefix}{d}/f{f}", _FILE, f"{d}-{f}".encode() * (f % 7), {"mtime": 1_500_000_000 + f}))
    return members


ARCHIVES: dict[str, list[Member]] = {
    "many small files, big and special ones among them": [
        *_many_small(),
        ("big.bin", _FILE, os.urandom(_filepool.SMALL_FILE + 1), {}),
        ("empty", _FILE, b"", {}),
        ("setuid", _FILE, b"#!/bin/sh\n", {"mode": 0o4755}),
        ("owned", _FILE, b"x", {"uid": 1234, "gid": 5678}),
        ("private", _FILE, b"y", {"mode": 0o600}),
        ("with-xattr", _FILE, b"z", {"pax_headers": {"SCHILY.xattr.user.note": "hello"}}),
        ("implicit/parent/file", _FILE, b"deep", {}),
    ],
    "the same path twice": [*_many_small(dirs=2), ("d1/f39", _FILE, b"second", {})],
    "a directory over a file in the pool": [*_many_small(dirs=2), ("d1/f39", _DIR, b"", {})],
    "an entry below a file in the pool": [*_many_small(dirs=2), ("d1/f39/inside", _FILE, b"no", {})],
    "a hardlink to a file in the pool": [*_many_small(dirs=2), ("d0/link", _HARDLINK, b"", {"linkname": "d1/f39"})],
    "a link resolved into the pool's directory": [
        ("l", _SYMLINK, b"", {"linkname": "d1"}),
        *_many_small(dirs=2),
        ("l/through-link", _FILE, b"via l", {}),
        ("l/f39/under", _FILE, b"no", {}),
    ],
    "a link over a file in the pool": [*_many_small(dirs=2), ("d1/f39", _SYMLINK, b"", {"linkname": "elsewhere"})],
    "a link over a directory of the pool": [*_many_small(dirs=2), ("d0", _SYMLINK, b"", {"linkname": "d1"})],
    "a new link beside the pool, written through": [
        *_many_small(dirs=2),
        ("d0/sub", _SYMLINK, b"", {"linkname": "../d1"}),
        ("d0/sub/f39", _FILE, b"replaced through the link", {}),
        ("d0/sub/new", _FILE, b"new through the link", {}),
    ],
    "a whiteout of a file in the pool": [*_many_small(dirs=2), ("d1/.wh.f39", _FILE, b"", {})],
    "an opaque directory over the pool": [*_many_small(dirs=2), ("d0/.wh..wh..opq", _FILE, b"", {})],
    "a name too long to create": [*_many_small(dirs=2), ("d1/" + "n" * 300, _FILE, b"long", {}), *_many_small("e", 1)],
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_the_pool_gives_the_same_layer_or_the_same_error(case: str, tmp_path: Path) -> None:
    without, with_pool = _extract_both(_tar(ARCHIVES[case]), tmp_path)
    assert with_pool == without


def test_a_failure_on_a_thread_names_its_entry(tmp_path: Path) -> None:
    """Files after it may exist by then (the layer is discarded); the error is the failing entry's."""
    data = _tar(ARCHIVES["a name too long to create"])
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerStoreError, match=r"tar entry 'd1/nnn.*File name too long"):
        apply_tar(io.BytesIO(data), dest, file_threads=2)


def test_files_over_a_lower_layer_or_in_a_non_empty_directory_are_written_in_order(tmp_path: Path) -> None:
    """The pool is only for a new, empty layer: elsewhere the extraction writes every file itself."""
    dest = tmp_path / "layer"
    dest.mkdir()
    (dest / "d0").mkdir()
    (dest / "d0" / "f1").write_bytes(b"old")
    data = _tar(_many_small(dirs=1))
    apply_tar(io.BytesIO(data), dest, file_threads=2)
    assert (dest / "d0" / "f1").read_bytes() == b"0-1"


@pytest.mark.integration
@pytest.mark.parametrize("case", list(ARCHIVES))
def test_the_native_module_gives_the_same_layer_or_the_same_error(
    case: str, tmp_path: Path, require_accel: Callable[[object, str], object]
) -> None:
    require_accel(_filepool._native, "create_files")  # then file_threads=2 creates the files with the native module
    without, with_pool = _extract_both(_tar(ARCHIVES[case]), tmp_path)
    assert with_pool == without


@pytest.mark.integration
def test_native_create_files(tmp_path: Path, require_accel: Callable[[object, str], Any]) -> None:
    create_files = require_accel(_filepool._native, "create_files")

    paths = [os.fsencode(tmp_path / f"f{n}") for n in range(3)]
    jobs = tuple((p, b"data%d" % n, 0o640, 1_000_000_000, 2_000_000_123) for n, p in enumerate(paths))
    assert create_files(jobs) is None
    for n, path in enumerate(paths):
        st = os.stat(path)
        assert (Path(os.fsdecode(path)).read_bytes(), stat.S_IMODE(st.st_mode)) == (b"data%d" % n, 0o640)
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_123)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    again = (jobs[0][0] + b"-new", b"", 0o600, 0, 0), (os.fsencode(tmp_path / "link"), b"", 0o600, 0, 0)
    assert create_files(again) == (1, 17)  # EEXIST: a final symbolic link is never followed
    assert not (tmp_path / "target").exists()
    with pytest.raises(TypeError):
        create_files([(paths[0], b"", 0, 0, 0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="null byte"):
        create_files(((b"a\0b", b"", 0, 0, 0),))
