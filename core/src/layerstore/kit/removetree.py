"""Delete a directory tree of any depth without recursion and without following symlinks."""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["remove_tree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
    """Delete `path` and everything below it; a file or symlink is simply unlinked.

    Works iteratively through directory descriptors, holding only those of
    the directory being emptied, so trees thousands of levels deep (longer
    than ``PATH_MAX``) are removed like flat ones.  Symlinks are removed,
    never followed.  Raises `OSError` on failure (what is left is still a
    tree this function can remove on a later call).
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, _DIR_FLAGS)
    # Each frame: the names of a directory still to delete; the directory
    # itself is the one `fd` holds.  Going up is openat(fd, "..").
    names_stack = [_names(fd)]
    dir_names: list[str] = []
    try:
        while names_stack:
            names = names_stack[-1]
            if not names:
                names_stack.pop()
                if not names_stack:
                    break
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent
                os.rmdir(dir_names.pop(), dir_fd=fd)
                continue
            name = names.pop()
            try:
                os.unlink(name, dir_fd=fd)
                continue
            except IsADirectoryError:
                pass
            except FileNotFoundError:
                continue
            except PermissionError as exc:
                # unlink of a directory is EISDIR on Linux, EPERM elsewhere.
                if exc.errno != errno.EPERM:
                    raise
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            dir_names.append(name)
            names_stack.append(_names(fd))
    finally:
        os.close(fd)
    os.rmdir(path)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return [e.name for e in it]
