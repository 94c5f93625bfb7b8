"""Checks that overlayfs can work on a driver home: kernel support, backing filesystem, xattrs."""

from __future__ import annotations

import ctypes
import os
import platform
import struct

__all__ = ["FS_NAMES", "OVERLAY_MAGIC", "backing_fs", "dtype_problem", "filesystem_magic", "kernel_has_overlay"]

OVERLAY_MAGIC = 0x794C7630
FS_NAMES: dict[int, str] = {
    0xEF53: "extfs",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x2FC12FC1: "zfs",
    OVERLAY_MAGIC: "overlayfs",
    0x65735546: "fuse",
    0x6969: "nfs",
    0x858458F6: "ramfs",
    0xF2F52010: "f2fs",
    0x52654973: "reiserfs",
    0x73717368: "squashfs",
    0x01021997: "v9fs",
    0xCA451A4E: "bcachefs",
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61, "arm64": 61}
_DT_UNKNOWN = 0


def kernel_has_overlay() -> bool:
    """True when the running kernel lists overlay in /proc/filesystems."""
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        return False


def filesystem_magic(path: str) -> int:
    """The f_type of statfs(2) on `path`."""
    buf = ctypes.create_string_buffer(256)  # larger than struct statfs on every 64-bit ABI
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    # f_type is the first field, a native long.
    return int(struct.unpack_from("l", buf.raw)[0]) & 0xFFFFFFFF


def backing_fs(path: str) -> str:
    """A name for the filesystem that holds `path` (hex magic when unknown)."""
    magic = filesystem_magic(path)
    return FS_NAMES.get(magic, f"unknown (0x{magic:x})")


def dtype_problem(directory: str) -> str | None:
    """None when readdir on `directory` reports file types (d_type), else why not.

    overlayfs needs d_type on its upper and lower filesystems to find
    whiteouts; xfs made without ftype=1 lacks it.
    """
    number = _SYS_GETDENTS64.get(platform.machine())
    if number is None:
        return None  # cannot check on this architecture; the test mount still runs
    probe = os.path.join(directory, "dtype-probe")
    with open(probe, "wb"):
        pass
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = ctypes.create_string_buffer(32768)
        while True:
            n = int(_libc.syscall(ctypes.c_long(number), ctypes.c_int(fd), buf, ctypes.c_uint(len(buf))))
            if n < 0:
                return f"getdents64 failed: {os.strerror(ctypes.get_errno())}"
            if n == 0:
                return "test file not listed by readdir"
            pos = 0
            raw = buf.raw
            while pos < n:
                reclen = struct.unpack_from("H", raw, pos + 16)[0]
                d_type = raw[pos + 18]
                name = raw[pos + 19 : pos + reclen].split(b"\0", 1)[0]
                if name == b"dtype-probe":
                    if d_type == _DT_UNKNOWN:
                        return "the backing filesystem does not report d_type (xfs needs ftype=1)"
                    return None
                pos += reclen
    finally:
        os.close(fd)
        os.unlink(probe)
