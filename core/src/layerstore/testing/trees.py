"""Trees that stress path handling: chains of directories far deeper than ``PATH_MAX`` allows to name."""

from __future__ import annotations

import os

__all__ = ["deep_directory"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def deep_directory(root: str | os.PathLike[str], depth: int, name: str = "d") -> int:
    """Make a chain of `depth` directories called `name` below `root`; return a descriptor of the deepest.

    Each level is created through the descriptor of the one above, so the
    chain may be far longer than any path can name.  The caller closes the
    descriptor (and creates whatever the bottom should hold through it).
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
