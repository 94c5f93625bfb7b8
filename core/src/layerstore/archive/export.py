"""Export changes of a layer directory as an uncompressed tar stream, generated lazily."""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..change import ChangeKind
from ..errors import LayerStoreError
from ..idtools import IDMappings
from ..longpaths import ShortPaths
from ..xattrs import get_xattr, list_xattrs
from .tarheader import (
    END_OF_ARCHIVE,
    TYPE_BLOCKDEV,
    TYPE_CHARDEV,
    TYPE_DIRECTORY,
    TYPE_FIFO,
    TYPE_HARDLINK,
    TYPE_REGULAR,
    TYPE_SYMLINK,
    padding,
    tar_header,
)
from .whiteouts import OVERLAY_XATTR_PREFIXES, whiteout_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..change import Change

__all__ = ["GeneratedStream", "export_changes", "exported_xattrs", "marker_header", "member_chunks"]

_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class GeneratedStream(io.RawIOBase):
    """A raw readable stream over a generator of byte chunks; `on_close` runs once when it is closed."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None) -> None:
        self._chunks: Iterator[bytes] | None = chunks
        self._pending = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._chunks is None:
                return 0
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                self._chunks = None
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            chunks, self._chunks = self._chunks, None
            if chunks is not None:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        finally:
            on_close, self._on_close = self._on_close, None
            super().close()
            if on_close is not None:
                on_close()


def exported_xattrs(path: str) -> dict[str, bytes] | None:
    """The xattrs of `path` (not following a symlink) that go into a tar, without the overlay's own; None if none."""
    try:
        names = list_xattrs(path)
    except OSError:
        return None
    if not names:
        return None
    found = {}
    for key in names:
        if key.startswith(OVERLAY_XATTR_PREFIXES):
            continue
        try:
            found[key] = get_xattr(path, key)
        except OSError:
            continue
    return found or None


def marker_header(name: str) -> bytes:
    """The header of a whiteout or opaque marker `name`: an empty regular file, mode 0, owner 0:0, mtime 0.

    Markers carry no owner on purpose: a kernel creates whiteouts with the
    mounter's host IDs, which the ID maps need not cover.
    """
    return tar_header(os.fsencode(name), TYPE_REGULAR, mode=0, uid=0, gid=0)


def member_chunks(
    path: str, name: bytes, st: os.stat_result, common: dict[str, Any], links: dict[tuple[int, int], bytes]
) -> Iterator[bytes]:
    """The tar chunks of the entry at `path` (lstat `st`), as member `name`: header(s), then content and padding.

    ``common`` holds the header fields the caller decided (``mode``, ``uid``,
    ``gid``, ``mtime_ns``, ``xattrs``).  A regular file whose inode was
    exported before (recorded in ``links``, which this updates) becomes a
    hardlink to that first name; a directory's name gets a trailing slash;
    a socket yields nothing (tar cannot archive it).  A file that shrinks
    while it is read raises `LayerStoreError` naming it.
    """
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            first = links.get(inode)
            if first is not None:
                yield tar_header(name, TYPE_HARDLINK, linkname=first, **common)
                return
            links[inode] = name
        yield from _file(path, name, st.st_size, common)
    elif stat.S_ISDIR(mode):
        yield tar_header(name + b"/", TYPE_DIRECTORY, **common)
    elif stat.S_ISLNK(mode):
        yield tar_header(name, TYPE_SYMLINK, linkname=os.fsencode(os.readlink(path)), **common)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = TYPE_CHARDEV if stat.S_ISCHR(mode) else TYPE_BLOCKDEV
        yield tar_header(name, kind, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev), **common)
    elif stat.S_ISFIFO(mode):
        yield tar_header(name, TYPE_FIFO, **common)


def _generate(root: str, changes: Iterable[Change], maps: IDMappings) -> Iterator[bytes]:
    with ShortPaths(root) as paths:
        yield from _members(paths, changes, maps)
    yield END_OF_ARCHIVE


def _members(paths: ShortPaths, changes: Iterable[Change], maps: IDMappings) -> Iterator[bytes]:
    owners: dict[tuple[int, int], tuple[int, int]] = {}
    links: dict[tuple[int, int], bytes] = {}
    for change in changes:
        rel = change.path.strip("/")
        if not rel:
            continue
        if change.kind == ChangeKind.DELETE:
            yield marker_header(whiteout_name(rel))
            continue
        paths.trim()  # the previous member is done with its path
        path = paths.path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise LayerStoreError(
                f"cannot export {change.path}: it disappeared from the layer during the export"
            ) from None
        key = (st.st_uid, st.st_gid)
        owner = owners.get(key)
        if owner is None:
            owner = owners[key] = maps.to_container(*key)
        common: dict[str, Any] = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": owner[0],
            "gid": owner[1],
            "mtime_ns": st.st_mtime_ns,
            "xattrs": exported_xattrs(path),
        }
        yield from member_chunks(path, os.fsencode(rel), st, common, links)


def _file(path: str, name: bytes, size: int, common: dict[str, Any]) -> Iterator[bytes]:
    fd = os.open(path, _READ_FLAGS)
    try:
        yield tar_header(name, TYPE_REGULAR, size=size, **common)
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                raise LayerStoreError(f"cannot export /{os.fsdecode(name)}: the file shrank during the export")
            left -= len(chunk)
            yield chunk
        yield padding(size)
    finally:
        os.close(fd)


def export_changes(
    layer_dir: str | os.PathLike[str],
    changes: Iterable[Change],
    *,
    id_maps: IDMappings | None = None,
    on_close: Callable[[], None] | None = None,
) -> BinaryIO:
    """Return a readable stream of an uncompressed tar of `changes`, taken from the tree `layer_dir`.

    Members are named relative to the layer root (no ``./``), directories
    with a trailing slash; a Delete becomes the canonical whiteout (an empty
    file ``dir/.wh.name``, mode 0, owner 0:0, mtime 0).  Regular files that
    share an inode become hardlinks to the first exported name.  Ownership is
    mapped back through ``id_maps.to_container``; xattrs are exported as
    ``SCHILY.xattr.*`` except the overlay filesystem's own.  The tar is
    generated while it is read (file contents in chunks); `on_close` runs
    once when the stream is closed.
    """
    root = os.fspath(layer_dir).rstrip("/")
    maps = id_maps if id_maps is not None else IDMappings()
    raw = GeneratedStream(_generate(root, changes, maps), on_close)
    return cast(BinaryIO, io.BufferedReader(raw, _CHUNK))
