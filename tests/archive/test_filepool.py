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
from pathlib import Path

import pytest

from layerstore.archive import _filepool
from layerstore.archive.apply import apply_tar
from layerstore.errors import LayerStoreError

Member = tuple[str, str, bytes | str | None, dict[str, object]]
_ARCHIVE_TIMES_END = 1_700_000_000 * 10**9  # every time in these archives is earlier


def _tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = int(extra.get("mtime", 1_600_000_000))  # type: ignore[call-overload]
            info.mode = int(extra.get("mode", 0o644))  # type: ignore[call-overload]
            info.uid = int(extra.get("uid", 0))  # type: ignore[call-overload]
            info.gid = int(extra.get("gid", 0))  # type: ignore[call-overload]
            if "pax" in extra:
                info.pax_headers = dict(extra["pax"])  # type: ignore[call-overload]
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = int(extra.get("mode", 0o755))  # type: ignore[call-overload]
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            tar.addfile(info)
    return out.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything the archive's order could show, per path (iterative walk)."""
    seen: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        for entry in sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            first = inodes.setdefault(st.st_ino, path)
            kind = stat.S_IFMT(st.st_mode)
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = Path(entry.path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(entry.path)
            elif stat.S_ISDIR(st.st_mode):
                todo.append(path)
            # Directories created on the way (not in the archive) get the extraction's time: not compared.
            mtime = st.st_mtime_ns if st.st_mtime_ns < _ARCHIVE_TIMES_END else None
            seen[path] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, content, first)
    return seen


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
            results.append((size, _snapshot(dest)))
    return results[0], results[1]


def _many_small(prefix: str = "d", dirs: int = 6, files: int = 40) -> list[Member]:
    """Directories of small files; with 40 files the last 8 of each (f32-f39) are still in the pool's
    unsent batch when the next entry comes, so an entry aimed at f39 meets a file surely not created yet."""
    members: list[Member] = []
    for d in range(dirs):
        members.append(("dir", f"{prefix}{d}", None, {}))
        for f in range(files):
            members.append(("file", f"{prefix}{d}/f{f}", f"{d}-{f}".encode() * (f % 7), {"mtime": 1_500_000_000 + f}))
    return members


ARCHIVES: dict[str, list[Member]] = {
    "many small files, big and special ones among them": [
        *_many_small(),
        ("file", "big.bin", os.urandom(_filepool.SMALL_FILE + 1), {}),
        ("file", "empty", b"", {}),
        ("file", "setuid", b"#!/bin/sh\n", {"mode": 0o4755}),
        ("file", "owned", b"x", {"uid": 1234, "gid": 5678}),
        ("file", "private", b"y", {"mode": 0o600}),
        ("file", "with-xattr", b"z", {"pax": {"SCHILY.xattr.user.note": "hello"}}),
        ("file", "implicit/parent/file", b"deep", {}),
    ],
    "the same path twice": [*_many_small(dirs=2), ("file", "d1/f39", b"second", {})],
    "a directory over a file in the pool": [*_many_small(dirs=2), ("dir", "d1/f39", None, {})],
    "an entry below a file in the pool": [*_many_small(dirs=2), ("file", "d1/f39/inside", b"no", {})],
    "a hardlink to a file in the pool": [*_many_small(dirs=2), ("hardlink", "d0/link", "d1/f39", {})],
    "a link resolved into the pool's directory": [
        ("symlink", "l", "d1", {}),
        *_many_small(dirs=2),
        ("file", "l/through-link", b"via l", {}),
        ("file", "l/f39/under", b"no", {}),
    ],
    "a link over a file in the pool": [*_many_small(dirs=2), ("symlink", "d1/f39", "elsewhere", {})],
    "a link over a directory of the pool": [*_many_small(dirs=2), ("symlink", "d0", "d1", {})],
    "a new link beside the pool, written through": [
        *_many_small(dirs=2),
        ("symlink", "d0/sub", "../d1", {}),
        ("file", "d0/sub/f39", b"replaced through the link", {}),
        ("file", "d0/sub/new", b"new through the link", {}),
    ],
    "a whiteout of a file in the pool": [*_many_small(dirs=2), ("file", "d1/.wh.f39", b"", {})],
    "an opaque directory over the pool": [*_many_small(dirs=2), ("file", "d0/.wh..wh..opq", b"", {})],
    "a name too long to create": [*_many_small(dirs=2), ("file", "d1/" + "n" * 300, b"long", {}), *_many_small("e", 1)],
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


def _require_native() -> None:
    if not _filepool.accelerated():
        if os.environ.get("LAYERSTORE_REQUIRE_ACCEL"):
            pytest.fail("LAYERSTORE_REQUIRE_ACCEL is set but layerstore-accel is not installed: pip install ./accel")
        pytest.skip("layerstore-accel is not installed (make venv builds it; tox's integration environment has it)")


@pytest.mark.integration
@pytest.mark.parametrize("case", list(ARCHIVES))
def test_the_native_module_gives_the_same_layer_or_the_same_error(case: str, tmp_path: Path) -> None:
    _require_native()  # then file_threads=2 creates the files with the native module
    without, with_pool = _extract_both(_tar(ARCHIVES[case]), tmp_path)
    assert with_pool == without


@pytest.mark.integration
def test_native_create_files(tmp_path: Path) -> None:
    _require_native()
    from layerstore_accel import create_files

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
