"""Paths below a directory made short enough for the kernel, at any depth.

The kernel refuses a path of ``PATH_MAX`` (4,096) bytes or more with
``ENAMETOOLONG``, but a layer may hold deeper trees: 5,000 nested
one-letter directories are 10,000 bytes of path.  `ShortPaths` hands out,
for a path relative to one directory, an equivalent path the kernel accepts:
the path itself while it is short (no cost at all), else
``/proc/self/fd/<fd>/<name>`` where ``<fd>`` is an ``O_PATH`` descriptor of
the entry's own parent directory (an *anchor*), so the kernel looks up one
name, however deep the entry is.

An anchor is opened from its parent's anchor when that is open (a walk going
down a deep tree costs one ``openat`` per directory), else from the root a
chunk of about 2 KiB of components at a time, the chunk boundaries being
anchors too.  Callers that know the tree changed below a path call
`ShortPaths.forget`; walks call `ShortPaths.trim` between entries to keep
the number of open descriptors bounded.  A path handed out stays valid
until the next `trim`, `forget` of an ancestor, or `close`.

Components are resolved by the kernel as in the plain path: a symbolic link
on the way is followed.  Callers pass paths whose directories they resolved
themselves (the walkers and the extraction do), exactly as they would pass
the plain path.
"""

from __future__ import annotations

import errno
import os
from typing import Final

__all__ = ["PATH_LIMIT", "ShortPaths"]

PATH_LIMIT: Final = 1024
"""Paths of at most this many bytes are handed out as they are.

Below ``PATH_MAX`` with room for one more name (255 bytes) and a slash, so
a caller may append an entry name to a directory path it was given.
"""

_CHUNK: Final = 2048  # bytes of components opened in one openat call from the root on
_FAST: Final = PATH_LIMIT // 4  # characters: no encoding needed below this (4 bytes per character at most)
_ANCHOR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_KEEP: Final = 128


class ShortPaths:
    """Short equivalents of the paths below the directory `root` (see the module docstring).

    Use as a context manager, or call `close`: it holds descriptors.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/") or "/"
        self._prefix = "" if self.root == "/" else self.root
        # Relative directory path (bytes, b"" for the root) -> O_PATH descriptor: parents of
        # entries handed out, and chunk boundaries (few, kept longer by `trim`).
        self._anchors: dict[bytes, int] = {}
        self._chunks: dict[bytes, int] = {}

    def path(self, rel: str) -> str:
        """A path of the entry `rel` (relative to the root, ``""`` for the root, a leading ``/`` allowed).

        It names the same entry as ``root/rel`` and is at most
        `PATH_LIMIT` bytes long.  Raises `OSError` when an ancestor that had
        to be opened does not exist or is not a directory.
        """
        if not rel:
            return self.root
        full = f"{self._prefix}{rel}" if rel[0] == "/" else f"{self._prefix}/{rel}"
        if len(full) <= _FAST or len(os.fsencode(full)) <= PATH_LIMIT:
            return full
        raw = os.fsencode(rel.strip("/"))
        cut = raw.rfind(b"/")
        fd = self._open_dir(raw[:cut]) if cut > 0 else self._root_fd()
        return f"/proc/self/fd/{fd}/{os.fsdecode(raw[cut + 1 :])}"

    def _open_dir(self, raw: bytes) -> int:
        """The anchor of the directory `raw` (relative, not empty), opened if need be."""
        fd = self._anchors.get(raw)
        if fd is not None:
            return fd
        cut = raw.rfind(b"/")
        parent = self._anchors.get(raw[:cut]) if cut > 0 else self._root_fd()
        if parent is not None:
            fd = os.open(raw[cut + 1 :], _ANCHOR_FLAGS, dir_fd=parent)
        else:
            start, parent = self._chunk_anchor(raw)
            fd = os.open(raw[start:], _ANCHOR_FLAGS, dir_fd=parent)
        self._anchors[raw] = fd
        return fd

    def _chunk_anchor(self, raw: bytes) -> tuple[int, int]:
        """Open the anchors at chunk boundaries down to `raw`; return where the rest starts and its anchor.

        Boundaries are chosen greedily from the root, so paths that share a
        long prefix share them.
        """
        fd = self._root_fd()
        start = 0
        while len(raw) - start > _CHUNK:
            cut = raw.rfind(b"/", start, start + _CHUNK + 1)
            if cut <= start:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), os.fsdecode(raw))
            known = self._chunks.get(raw[:cut])
            if known is None:
                known = self._chunks[raw[:cut]] = os.open(raw[start:cut], _ANCHOR_FLAGS, dir_fd=fd)
            fd = known
            start = cut + 1
        return start, fd

    def _root_fd(self) -> int:
        fd = self._chunks.get(b"")
        if fd is None:
            fd = self._chunks[b""] = os.open(self.root, _ANCHOR_FLAGS)
        return fd

    def forget(self, rel: str) -> None:
        """Close the anchors at or below `rel`: the directory there was removed or replaced."""
        raw = os.fsencode(rel.strip("/"))
        if not raw:
            self.close()
            return
        below = raw + b"/"
        for anchors in (self._anchors, self._chunks):
            for key in [k for k in anchors if k == raw or k.startswith(below)]:
                os.close(anchors.pop(key))

    def trim(self, keep: int = _KEEP) -> None:
        """Close anchors when more than `keep` are open (chunk boundaries and the root's stay longer).

        Paths handed out before may then go stale: call it only between uses.
        """
        if len(self._anchors) > keep:
            _close_all(self._anchors)
        if len(self._chunks) > keep:
            _close_all(self._chunks)

    def close(self) -> None:
        """Close every descriptor; paths handed out become invalid (the object stays usable)."""
        _close_all(self._anchors)
        _close_all(self._chunks)

    def __enter__(self) -> ShortPaths:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all(anchors: dict[bytes, int]) -> None:
    fds = list(anchors.values())
    anchors.clear()
    for fd in fds:
        os.close(fd)
