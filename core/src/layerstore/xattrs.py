"""Reading extended attributes without trusting the length a filesystem returns.

Python's ``os.getxattr`` and ``os.listxattr`` read into a fixed first buffer
and trust whatever length comes back.  Some filesystems answer a buffer that
is too small with a short length instead of ``ERANGE`` (zfs-fuse returns 8
bytes for any value longer than 128), so those calls silently truncate.  The
functions here ask for the size first (a call with an empty buffer), read
into a buffer of exactly that size, and retry when the value changed between
the two calls or the answer does not fit the size announced.  Every read of
an xattr in layerstore and its drivers goes through this module.

Paths are read without following a final symlink unless asked; an open file
descriptor (an ``int``) may be given instead of a path.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ctypes

__all__ = ["XATTR_SIZE_MAX", "get_xattr", "has_xattr", "list_xattrs", "read_xattrs"]

XATTR_SIZE_MAX = 65536
"""The largest value (and name list) the Linux VFS passes through, in bytes."""

_ATTEMPTS = 16
_NO_XATTR = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


@functools.cache
def _libc() -> Any:
    """The C library with the xattr calls typed; loaded on the first value read (``ctypes`` costs ~4 ms)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for name, first in (("getxattr", ctypes.c_char_p), ("lgetxattr", ctypes.c_char_p), ("fgetxattr", ctypes.c_int)):
        fn = getattr(libc, name)
        fn.argtypes = [first, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_ssize_t
    for name, first in (("listxattr", ctypes.c_char_p), ("llistxattr", ctypes.c_char_p),
                        ("flistxattr", ctypes.c_int)):
        fn = getattr(libc, name)
        fn.argtypes = [first, ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_ssize_t
    return libc


PathOrFd = str | bytes | os.PathLike[str] | os.PathLike[bytes] | int

# (buffer or None, size) -> result of the system call (-1 with errno set on error)
_Call = Callable[["ctypes.Array[ctypes.c_char] | None", int], int]


def _target(path: PathOrFd) -> int | bytes:
    return path if isinstance(path, int) else os.fsencode(path)


def _checked(call: _Call, buf: ctypes.Array[ctypes.c_char] | None, size: int, path: PathOrFd) -> int:
    result = call(buf, size)
    if result < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path if not isinstance(path, int) else None)
    return result


def _read_sized(call: _Call, path: PathOrFd, what: str) -> bytes:
    """Ask the size, read exactly that much, and retry on ERANGE, a size change or a short answer.

    A short answer is accepted only when two reads in a row agree on it with
    an unchanged announced size: some filesystems announce an upper bound.
    """
    import ctypes  # here, not at module import: a tree without xattrs never needs it

    previous: tuple[int, bytes] | None = None
    for _ in range(_ATTEMPTS):
        size = _checked(call, None, 0, path)
        if size == 0:
            return b""
        buf = ctypes.create_string_buffer(size)
        try:
            got = _checked(call, buf, size, path)
        except OSError as exc:
            if exc.errno == errno.ERANGE:  # it grew between the two calls
                previous = None
                continue
            raise
        value = buf.raw[:got]
        if got == size:
            return value
        if previous == (size, value):
            return value
        previous = (size, value)
    raise OSError(
        errno.EIO,
        f"the filesystem keeps giving inconsistent sizes for {what} (tried {_ATTEMPTS} times)",
        path if not isinstance(path, int) else None,
    )


def has_xattr(path: PathOrFd, name: str, *, follow_symlinks: bool = False) -> bool:
    """Whether `path` (a path or an open fd) has extended attribute `name`; its value is not needed.

    False when the attribute is absent or the filesystem has no xattrs;
    other errors raise `OSError`.  A truncated answer (see above) still says
    the attribute exists, so this asks the kernel once, without the size dance.
    """
    try:  # a descriptor has no symlink to follow, and os.getxattr refuses to be told otherwise
        os.getxattr(path, name, follow_symlinks=follow_symlinks or isinstance(path, int))
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return False
        raise
    return True


def get_xattr(path: PathOrFd, name: str, *, follow_symlinks: bool = False) -> bytes:
    """Return the whole value of extended attribute `name` of `path` (a path or an open fd).

    Raises `OSError` as ``os.getxattr`` does (``ENODATA`` when the attribute
    is absent, ``ENOTSUP`` when the filesystem has none), and ``EIO`` when
    the filesystem's answers stay inconsistent.
    """
    target = _target(path)
    raw_name = os.fsencode(name)
    if isinstance(target, int):
        fd = target

        def call(buf: ctypes.Array[ctypes.c_char] | None, size: int) -> int:
            return int(_libc().fgetxattr(fd, raw_name, buf, size))
    else:
        fn = _libc().getxattr if follow_symlinks else _libc().lgetxattr
        encoded = target

        def call(buf: ctypes.Array[ctypes.c_char] | None, size: int) -> int:
            return int(fn(encoded, raw_name, buf, size))

    return _read_sized(call, path, f"extended attribute {name}")


def list_xattrs(path: PathOrFd, *, follow_symlinks: bool = False) -> list[str]:
    """Return the names of the extended attributes of `path` (a path or an open fd), in the filesystem's order."""
    # Most files have none: an empty list needs no size check, and its answer is
    # the common case of every tree walk (a truncated list is never empty).
    if not os.listxattr(path, follow_symlinks=follow_symlinks or isinstance(path, int)):
        return []
    target = _target(path)
    if isinstance(target, int):
        fd = target

        def call(buf: ctypes.Array[ctypes.c_char] | None, size: int) -> int:
            return int(_libc().flistxattr(fd, buf, size))
    else:
        fn = _libc().listxattr if follow_symlinks else _libc().llistxattr
        encoded = target

        def call(buf: ctypes.Array[ctypes.c_char] | None, size: int) -> int:
            return int(fn(encoded, buf, size))

    raw = _read_sized(call, path, "the list of extended attributes")
    return [os.fsdecode(n) for n in raw.split(b"\0") if n]


def read_xattrs(path: PathOrFd, *, follow_symlinks: bool = False) -> dict[str, bytes]:
    """Return every extended attribute of `path` as ``{name: value}``.

    An attribute removed between listing and reading is left out; a
    filesystem without xattr support gives ``{}``.
    """
    try:
        names = list_xattrs(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    found = {}
    for name in names:
        try:
            found[name] = get_xattr(path, name, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    return found
