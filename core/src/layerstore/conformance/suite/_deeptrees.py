"""Trees deeper than PATH_MAX: a 5,000-level path and names of NAME_MAX bytes, through every operation.

A layer may hold paths far longer than the kernel's ``PATH_MAX`` (4,096
bytes): 5,000 nested one-letter directories make 10,000 bytes, twenty
directories of 255-byte names 5,120.  A driver must import, export
byte for byte, list changes, diff, size, check and remove such layers, and
build children on them, like any other (docs/driver-guide.md).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from layerstore.change import ChangeKind
from layerstore.drivers import Driver
from layerstore.graph import Graph

DEPTH = 5000
"""Levels of the deep path (10,000 bytes: well beyond PATH_MAX)."""

NAME_MAX = 255
LONG_LEVELS = 20
"""Directories of `NAME_MAX`-byte names in the long-name path (5,120 bytes)."""

_MTIME = 1_600_000_000


def _dirs(tf: tarfile.TarFile, parts: list[str]) -> str:
    name = ""
    for part in parts:
        name = f"{name}/{part}" if name else part
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
        tf.addfile(info)
    return name


def _file(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, _MTIME
    tf.addfile(info, io.BytesIO(data))


def deep_tar() -> bytes:
    """A base layer: ``d/`` * 5,000 with two files at the bottom, and 20 levels of 255-byte names with a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        deep = _dirs(tf, ["d"] * DEPTH)
        _file(tf, f"{deep}/file", b"deep\n")
        _file(tf, f"{deep}/gone", b"removed by the child\n")
        long = _dirs(tf, [c * NAME_MAX for c in "abcdefghijklmnopqrst"[:LONG_LEVELS]])
        _file(tf, f"{long}/{'f' * NAME_MAX}", b"long names\n")
    return buf.getvalue()


def child_tar() -> bytes:
    """A child layer changing entries at depth 5,000: a new file, a changed file and a whiteout."""
    buf = io.BytesIO()
    deep = "/".join(["d"] * DEPTH)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _file(tf, f"{deep}/new", b"added at depth 5000\n")
        _file(tf, f"{deep}/file", b"changed at depth 5000\n", mode=0o600)
        _file(tf, f"{deep}/.wh.gone", b"", mode=0)
    return buf.getvalue()


def _sha(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _members(driver: Driver, layer: str, parent: str | None) -> dict[str, bytes | None]:
    """name -> content (None for non-files) of the driver's diff, read with `tarfile`."""
    found: dict[str, bytes | None] = {}
    with driver.diff(layer, parent) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            handle = tar.extractfile(info) if info.isreg() else None
            found[info.name.rstrip("/")] = handle.read() if handle is not None else None
    return found


class DeepTreeTests:
    """Layers whose paths are longer than PATH_MAX."""

    @pytest.fixture
    def deep_graph(self, driver: Driver) -> Iterator[Graph]:
        """An image store on the driver under test (its metadata in a temporary directory)."""
        with tempfile.TemporaryDirectory(prefix="layerstore-deep-") as root:
            yield Graph(Path(root), driver)

    def test_deep_paths_round_trip(self, driver: Driver, deep_graph: Graph) -> None:
        raw = deep_tar()
        base = deep_graph.create(io.BytesIO(raw))
        deep = "/".join(["d"] * DEPTH)
        long = "/".join(c * NAME_MAX for c in "abcdefghijklmnopqrst"[:LONG_LEVELS])

        with deep_graph.tar_layer(base) as stream:
            assert _sha(stream) == hashlib.sha256(raw).hexdigest(), "the deep layer does not export byte for byte"

        changes = driver.changes(base.id, None)
        paths = {str(c.path) for c in changes}
        assert f"/{deep}/file" in paths and f"/{long}/{'f' * NAME_MAX}" in paths, "deep entries missing from changes"
        assert len(changes) == DEPTH + 2 + LONG_LEVELS + 1, f"{len(changes)} changes for a base layer"
        assert all(c.kind == ChangeKind.ADD for c in changes)

        members = _members(driver, base.id, None)
        assert members[f"{deep}/file"] == b"deep\n", "the diff lost the file at depth 5000"
        assert members[f"{long}/{'f' * NAME_MAX}"] == b"long names\n", "the diff lost the file below long names"
        assert driver.diff_size(base.id, None) == len(b"deep\n") + len(b"removed by the child\n") + len(
            b"long names\n"
        )

        results = list(deep_graph.check())
        assert [r.ok for r in results] == [True], f"check of the deep layer: {[r.message for r in results]}"
        deep_graph.delete(base.id)
        assert not driver.exists(base.id), "the removed deep layer still exists"

    def test_child_of_a_deep_layer(self, driver: Driver, deep_graph: Graph) -> None:
        base = deep_graph.create(io.BytesIO(deep_tar()))
        raw = child_tar()
        child = deep_graph.create(io.BytesIO(raw), parent=base.id)
        deep = "/".join(["d"] * DEPTH)

        with deep_graph.tar_layer(child) as stream:
            assert _sha(stream) == hashlib.sha256(raw).hexdigest(), "the child layer does not export byte for byte"

        kinds = {str(c.path): c.kind for c in driver.changes(child.id, base.id)}
        assert kinds.get(f"/{deep}/new") == ChangeKind.ADD, "the file added at depth 5000 is not an Add"
        assert kinds.get(f"/{deep}/file") == ChangeKind.MODIFY, "the file changed at depth 5000 is not a Modify"
        assert kinds.get(f"/{deep}/gone") == ChangeKind.DELETE, "the file deleted at depth 5000 is not a Delete"

        members = _members(driver, child.id, base.id)
        assert members.get(f"{deep}/new") == b"added at depth 5000\n"
        assert members.get(f"{deep}/file") == b"changed at depth 5000\n"
        assert f"{deep}/.wh.gone" in members, "the diff has no whiteout at depth 5000"
        assert driver.diff_size(child.id, base.id) == len(b"added at depth 5000\n") + len(
            b"changed at depth 5000\n"
        )
        with driver.mounted(child.id) as root:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for _ in range(DEPTH):
                    fd_next = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                    os.close(fd)
                    fd = fd_next
                assert sorted(os.listdir(fd)) == ["file", "new"], "the child's tree at depth 5000 is wrong"
            finally:
                os.close(fd)

        results = list(deep_graph.check())
        assert all(r.ok for r in results), f"check: {[r.message for r in results]}"
        deep_graph.delete(child.id)
        deep_graph.delete(base.id)
        assert not driver.exists(child.id) and not driver.exists(base.id), "removed deep layers still exist"
