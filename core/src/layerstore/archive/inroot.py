"""Open a path below a directory with that directory as ``/``: links followed, never out of it.

`open_in_root` is ``openat2(dir_fd, path, RESOLVE_IN_ROOT)``: every symbolic
link on the way is followed inside the directory (absolute targets start at
it, ``..`` stops at it), the rule layers are extracted by, so a member written
through a link is read back through the same link.  Kernels without
``openat2`` (before 5.6) get the same resolution done in Python, and so do
paths longer than ``PATH_MAX`` (a component at a time, through directory
descriptors).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

from ._membername import MAX_LINKS, next_component, push_target

__all__ = ["open_in_root"]

_SYS_OPENAT2: Final = 437  # the same number on every architecture Linux added it to
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_IN_ROOT: Final = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_DIR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HOW_SIZE: Final = ctypes.sizeof(_OpenHow)
_state = {"openat2": True}  # False once the kernel said it has none
# The `open_how` argument of each set of flags, built once: an export opens every file of a layer.
# (A ``byref`` keeps its structure alive.)
_hows: dict[int, object] = {}


def _new_how(flags: int) -> object:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    ref = _hows[flags] = ctypes.byref(how)
    return ref


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """Open `path` (relative) below the directory `root_fd`, resolving links inside it; return the descriptor.

    Raises the `OSError` of the open (``ELOOP`` when `flags` has
    ``O_NOFOLLOW`` and the last component is a link).
    """
    if _state["openat2"]:
        how = _hows.get(flags) or _new_how(flags)
        fd = _syscall(_SYS_OPENAT2, root_fd, os.fsencode(path), how, _HOW_SIZE)
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.ENAMETOOLONG:
            return _open_deep(root_fd, path, flags)
        if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that does not know openat2
            raise OSError(err, os.strerror(err), path)
        _state["openat2"] = False
    try:
        return os.open(_resolve(root_fd, path), flags | os.O_CLOEXEC, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    return _open_deep(root_fd, path, flags)


def _open_deep(root_fd: int, path: str, flags: int) -> int:
    """`open_in_root` for a path too long for one system call: one directory descriptor at a time."""
    root_st = os.fstat(root_fd)
    root = (root_st.st_dev, root_st.st_ino)
    todo = path.split("/")[::-1]
    fd = os.dup(root_fd)
    links = 0
    try:
        while len(todo) > 1:
            comp = todo.pop()
            if comp in ("", "."):
                continue
            if comp == "..":  # the real parent, never above the root
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != root:
                    fd = _replace(fd, os.open("..", _DIR_FLAGS, dir_fd=fd))
                continue
            try:
                fd = _replace(fd, os.open(comp, _DIR_FLAGS, dir_fd=fd))
                continue
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                try:
                    target = os.readlink(comp, dir_fd=fd)
                except OSError:
                    raise exc from None  # neither a directory nor a link
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if target.startswith("/"):
                fd = _replace(fd, os.dup(root_fd))
            todo.extend(reversed(target.split("/")))
        last = todo[0] if todo else ""
        return os.open(last or ".", flags | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _replace(old: int, new: int) -> int:
    os.close(old)
    return new


def _resolve(root_fd: int, path: str) -> str:
    """The path of `path` below `root_fd` with every link but the last resolved inside it."""
    todo = path.split("/")[::-1]
    done: list[str] = []
    links = 0
    while len(todo) > 1:
        comp = next_component(todo, done)
        if comp is None:
            continue
        rel = "/".join([*done, comp])
        try:
            target = os.readlink(rel, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a link
                raise
            done.append(comp)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        push_target(todo, done, target)
    last = todo[0] if todo else ""
    return "/".join([*done, last]) if done else (last or ".")
