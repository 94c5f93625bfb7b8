"""Tree removal that holds for any depth: no recursion, no path longer than one name.

`shutil.rmtree` recurses once per directory level (Python < 3.13) and builds
full paths, so a layer with a few thousand nested directories makes it fail
with `RecursionError` or ``ENAMETOOLONG``.  `remove_tree` walks down and back
up with one directory descriptor at a time (``openat`` of a name, ``..`` to
return), so its stack and its paths stay the same size at any depth.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["remove_tree", "remove_tree_quietly"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _first_subdir(fd: int) -> str | None:
    """Unlink every non-directory in the directory `fd`; return the name of one subdirectory, or None."""
    with os.scandir(fd) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=fd)
    return None


def _open_subdir(parent_fd: int, name: str) -> int:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    # A directory without write or search permission for its owner (mode 0 in a
    # layer) cannot be emptied by a non-root owner: open it up first.
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700 and st.st_uid == os.geteuid():
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    return fd


def remove_tree(path: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
    """Delete `path` and everything below it (a symlink or file is simply unlinked).

    Works at any depth and with any path length below `path`: it never
    recurses and never builds a path longer than one entry name.  Symlinks are
    never followed.  Raises `OSError` when something cannot be removed (what
    could be removed is gone); a missing `path` is fine unless `missing_ok` is
    False.
    """
    top = os.fspath(path)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(top)
        return
    fd = os.open(top, _DIR_FLAGS)
    depth_names: list[str] = []
    try:
        while True:
            sub = _first_subdir(fd)
            if sub is not None:
                child = _open_subdir(fd, sub)
                os.close(fd)
                fd = child
                depth_names.append(sub)
                continue
            if not depth_names:
                break
            name = depth_names.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)


def remove_tree_quietly(path: str | os.PathLike[str], warn: Callable[[str], object] | None = None) -> bool:
    """`remove_tree`, but a failure is reported through `warn` (one line naming `path`) instead of raised.

    Returns True when `path` is gone.  For sweeps of leftovers, which must
    never make the command that runs them fail.
    """
    try:
        remove_tree(path)
    except OSError as exc:
        if warn is not None:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EBUSY:
                reason += " (something is mounted inside it)"
            warn(f"could not remove leftover {os.fspath(path)}: {reason}; delete it by hand")
        return False
    return True
