"""Telling whether a tree changed since a moment, from inode change times (``ctime``).

Every write, truncation, chmod, chown, xattr change, link, unlink or rename
sets the ``ctime`` of the inodes it touches (for an entry added or removed:
its directory) to the current time, and no program can set a ``ctime``
back.  So once `clock_mark` has returned a mark, a tree none of whose
inodes has a ``ctime`` newer than the mark has not changed since, as long
as the wall clock is not stepped backwards in between.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerstore.kit import ScratchArea

__all__ = ["changed_since", "clock_mark"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clock_mark(staging: ScratchArea) -> int:
    """A time (ns) no earlier than every change made so far, and earlier than every change made after return.

    Measured on the filesystem of `staging` (a scratch file there), whose
    timestamps may be coarse: it waits until the clock has ticked past the
    mark (at most one tick).
    """
    with staging.reserve("clock") as entry:
        fd = os.open(entry.path / "mark", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            mark = os.fstat(fd).st_ctime_ns
            while os.fstat(fd).st_ctime_ns <= mark:
                os.utime(fd)
        finally:
            os.close(fd)
    return mark


def changed_since(root: str, mark: int) -> bool:
    """True when some inode in the tree `root` changed (``ctime``) after `mark` (ns).  Iterative, any depth."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        if os.fstat(fd).st_ctime_ns > mark:
            return True
        pending: list[list[str]] = []
        subdirs = _subdirs_unless_changed(fd, mark)
        while subdirs is not None:
            pending.append(subdirs)
            while pending and not pending[-1]:
                pending.pop()
                if pending:
                    fd = _replace(fd, os.open("..", _DIR_FLAGS, dir_fd=fd))
            if not pending:
                return False
            fd = _replace(fd, os.open(pending[-1].pop(), _DIR_FLAGS, dir_fd=fd))
            subdirs = _subdirs_unless_changed(fd, mark)
        return True
    finally:
        os.close(fd)


def _subdirs_unless_changed(fd: int, mark: int) -> list[str] | None:
    """The subdirectories of the directory `fd`, or None when one of its entries changed after `mark`."""
    subdirs = []
    with os.scandir(fd) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            if st.st_ctime_ns > mark:
                return None
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.name)
    return subdirs


def _replace(old_fd: int, new_fd: int) -> int:
    os.close(old_fd)
    return new_fd
