"""Where the overlay driver keeps things under its home, and the small readers and locks on them."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from layerstore.flock import held_flock
from layerstore.kit import is_valid_layer_id

__all__ = [
    "ALIASES_DIR",
    "COPIED_FROM",
    "FROZEN_PREFIX",
    "KIDS_DIR",
    "LINK_DIR",
    "RESERVED",
    "STAGING_DIR",
    "TRASH_DIR",
    "Layout",
    "dir_lock",
    "make_dirs",
    "read_text",
]

LINK_DIR = "l"
RESERVED = (LINK_DIR,)
"""Layer IDs the layout takes for itself."""
KIDS_DIR = "kids"
ALIASES_DIR = "aliases"
FROZEN_PREFIX = "frozen-"
COPIED_FROM = "copied-from"
STAGING_DIR = ".staging"
TRASH_DIR = ".deleting"


def read_text(path: str) -> str | None:
    """The stripped contents of the small text file `path`, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def dir_lock(path: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on the directory `path` itself (its inode: the lock moves with renames).

    Needs no new file, so it works on a full filesystem.  Yields False
    instead of waiting when `blocking` is False and another process holds it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with held_flock(fd, shared=shared, blocking=blocking) as got:
            yield got
    finally:
        os.close(fd)


def make_dirs(home: str, names: tuple[str, ...]) -> None:
    """Create the directories `names` under `home` (mode 0700) where missing.

    A full filesystem is no error here: a store must still open there, so
    that layers can be removed to free space.
    """
    for name in names:
        try:
            os.makedirs(os.path.join(home, name), mode=0o700, exist_ok=True)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise


class Layout:
    """Paths and records of the layers under one driver home."""

    def __init__(self, home: str) -> None:
        self.home = home

    def valid(self, layer_id: str) -> bool:
        """True for a name that can be a layer (not a reserved or hidden name, no slash)."""
        return is_valid_layer_id(layer_id, RESERVED)

    def dir(self, layer_id: str) -> str:
        """The layer's own directory, ``<home>/<id>``."""
        return os.path.join(self.home, layer_id)

    def exists(self, layer_id: str) -> bool:
        """True when the layer's directory holds its diff/."""
        return self.valid(layer_id) and os.path.isdir(os.path.join(self.dir(layer_id), "diff"))

    def parent_of(self, layer_id: str) -> str | None:
        """The parent recorded for the layer (None for a base layer)."""
        return read_text(os.path.join(self.dir(layer_id), "parent")) or None

    def lowers(self, layer_id: str) -> list[str]:
        """The layer's lower chain, top-down, as ``l/<short>`` entries relative to the home."""
        text = read_text(os.path.join(self.dir(layer_id), "lower"))
        return text.split(":") if text else []

    def link_path(self, short: str) -> str:
        """``<home>/l/<short>``."""
        return os.path.join(self.home, LINK_DIR, short)

    def layer_ids(self) -> list[str]:
        """Every layer under the home, sorted."""
        with os.scandir(self.home) as it:
            return sorted(e.name for e in it if self.exists(e.name))
