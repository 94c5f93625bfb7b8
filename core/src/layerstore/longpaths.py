"""Paths below a directory made short enough for the kernel, at any depth.

The kernel refuses a path of ``PATH_MAX`` (4,096) bytes or more with
``ENAMETOOLONG``, but a layer may hold deeper trees: 5,000 nested
one-letter directories are 10,000 bytes of path.  `ShortPaths` hands out,
for a path relative to one directory, an equivalent path the kernel accepts:
the path itself while it is short (no cost at all), else
``/proc/self/fd/<fd>/<rest>`` where ``<fd>`` is an ``O_PATH`` descriptor of
an ancestor directory (an *anchor*) and ``<rest>`` at most about 2 KiB.

Anchors are opened by walking down from the root or from the nearest anchor
above them, a chunk of components at a time, and kept (so a walk down a deep
tree opens each one once).  Callers that know the tree changed below a path
call `ShortPaths.forget`; long walks call `ShortPaths.trim` between entries
to keep the number of open descriptors bounded.  A path handed out stays
valid until the next `trim`, `forget` of its ancestor or `close`.

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

PATH_LIMIT: Final = 3584
"""Paths of at most this many bytes are handed out as they are.

Below ``PATH_MAX`` with room for one more name (255 bytes) and a slash, so
a caller may append an entry name to a directory path it was given.
"""

_CHUNK: Final = 2048  # bytes of components opened in one openat call, and the most a tail holds
_FAST: Final = PATH_LIMIT // 4  # characters: no encoding needed below this (4 bytes per character at most)
_ANCHOR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_KEEP: Final = 64


class ShortPaths:
    """Short equivalents of the paths below the directory `root` (see the module docstring).

    Use as a context manager, or call `close`: it holds descriptors.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/") or "/"
        self._prefix = "" if self.root == "/" else self.root
        self._anchors: dict[bytes, int] = {}

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
        return self._anchored(rel.lstrip("/"))

    def _anchored(self, rel: str) -> str:
        raw = os.fsencode(rel)
        # Chunk boundaries (slashes) are chosen greedily from the root, so paths
        # that share a long prefix share its anchors.
        bounds: list[int] = []
        start = 0
        while len(raw) - start > _CHUNK:
            cut = raw.rfind(b"/", start, start + _CHUNK + 1)
            if cut <= start:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), rel)
            bounds.append(cut)
            start = cut + 1
        fd = self._anchor(raw, bounds) if bounds else self._root_fd()
        return f"/proc/self/fd/{fd}/{os.fsdecode(raw[start:])}"

    def _anchor(self, raw: bytes, bounds: list[int]) -> int:
        """The descriptor of the directory ``raw[:bounds[-1]]``, opened from the deepest anchor already open."""
        level = len(bounds)
        fd = -1
        while level:
            fd = self._anchors.get(raw[: bounds[level - 1]], -1)
            if fd >= 0:
                break
            level -= 1
        if fd < 0:
            fd = self._root_fd()
        start = bounds[level - 1] + 1 if level else 0
        for cut in bounds[level:]:
            fd = os.open(raw[start:cut], _ANCHOR_FLAGS, dir_fd=fd)
            self._anchors[raw[:cut]] = fd
            start = cut + 1
        return fd

    def _root_fd(self) -> int:
        fd = self._anchors.get(b"")
        if fd is None:
            fd = self._anchors[b""] = os.open(self.root, _ANCHOR_FLAGS)
        return fd

    def forget(self, rel: str) -> None:
        """Close the anchors at or below `rel`: the directory there was removed or replaced."""
        raw = os.fsencode(rel.strip("/"))
        if not raw:
            self.trim(0)
            return
        below = raw + b"/"
        for key in [k for k in self._anchors if k == raw or k.startswith(below)]:
            os.close(self._anchors.pop(key))

    def trim(self, keep: int = _KEEP) -> None:
        """Close the anchors (all but the root's) when more than `keep` are open; paths handed out may go stale."""
        if len(self._anchors) <= keep + 1:
            return
        for key in [k for k in self._anchors if k]:
            os.close(self._anchors.pop(key))

    def close(self) -> None:
        """Close every descriptor; paths handed out become invalid (the object stays usable)."""
        anchors, self._anchors = self._anchors, {}
        for fd in anchors.values():
            os.close(fd)

    def __enter__(self) -> ShortPaths:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
