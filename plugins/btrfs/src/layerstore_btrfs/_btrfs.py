"""Thin wrappers of the btrfs ioctls the driver needs, and filesystem detection.

Struct layouts follow ``linux/btrfs.h`` (every struct below is 4096 bytes
except ``btrfs_ioctl_fs_info_args``, 1024).  Each wrapper raises `OSError`
with the path in it; callers turn that into layerstore errors.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BTRFS_SUPER_MAGIC",
    "FIRST_FREE_OBJECTID",
    "create_subvolume",
    "delete_subvolume",
    "filesystem_type",
    "filesystem_uuid",
    "is_subvolume",
    "nested_subvolumes",
    "nested_subvolumes_by_walk",
    "set_read_only",
    "snapshot_subvolume",
    "subvolume_id",
]

BTRFS_SUPER_MAGIC = 0x9123683E
FIRST_FREE_OBJECTID = 256
"""Inode number of the root directory of every subvolume."""

_MAGIC = 0x94
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


# struct btrfs_ioctl_vol_args { __s64 fd; char name[4088]; }
_VOL_ARGS = struct.Struct("=q4088s")
# struct btrfs_ioctl_vol_args_v2 { __s64 fd; __u64 transid, flags; union{...} [32 bytes]; char name[4040]; }
_VOL_ARGS_V2 = struct.Struct("=qQQ32s4040s")
# struct btrfs_ioctl_ino_lookup_args { __u64 treeid, objectid; char name[4080]; }
_INO_LOOKUP_ARGS = struct.Struct("=QQ4080s")
# struct btrfs_ioctl_get_subvol_rootref_args {
#     __u64 min_treeid; {__u64 treeid, dirid} rootref[255]; __u8 num_items; pad 7 }
_ROOTREF_ARGS = struct.Struct("=Q4080sB7x")
_ROOTREF = struct.Struct("=QQ")
# struct btrfs_ioctl_ino_lookup_user_args { __u64 dirid, treeid; char name[256]; char path[3824]; }
_INO_LOOKUP_USER_ARGS = struct.Struct("=QQ256s3824s")
# struct btrfs_ioctl_fs_info_args: max_id, num_devices, fsid[16], ... padded to 1024
_FS_INFO_ARGS = struct.Struct("=QQ16s992x")

IOC_SUBVOL_SETFLAGS = _ioc(_IOC_WRITE, 26, 8)  # __u64 flags
SUBVOL_RDONLY = 1 << 1
IOC_SUBVOL_CREATE = _ioc(_IOC_WRITE, 14, _VOL_ARGS.size)
IOC_SNAP_DESTROY = _ioc(_IOC_WRITE, 15, _VOL_ARGS.size)
IOC_INO_LOOKUP = _ioc(_IOC_READ | _IOC_WRITE, 18, _INO_LOOKUP_ARGS.size)
IOC_SNAP_CREATE_V2 = _ioc(_IOC_WRITE, 23, _VOL_ARGS_V2.size)
IOC_FS_INFO = _ioc(_IOC_READ, 31, _FS_INFO_ARGS.size)
IOC_GET_SUBVOL_ROOTREF = _ioc(_IOC_READ | _IOC_WRITE, 61, _ROOTREF_ARGS.size)
IOC_INO_LOOKUP_USER = _ioc(_IOC_READ | _IOC_WRITE, 62, _INO_LOOKUP_USER_ARGS.size)

_NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _name_bytes(name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or b"\0" in raw or len(raw) > _NAME_MAX or raw in (b".", b".."):
        raise OSError(errno.EINVAL, f"invalid subvolume name {name!r}")
    return raw


def _ioctl(fd: int, request: int, buf: bytearray, path: Path) -> None:
    try:
        fcntl.ioctl(fd, request, buf)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _dir_ioctl(directory: Path, request: int, buf: bytearray, path: Path) -> None:
    """Run ioctl `request` on directory `directory`; errors name `path`."""
    fd = os.open(directory, _DIR_FLAGS)
    try:
        _ioctl(fd, request, buf, path)
    finally:
        os.close(fd)


def create_subvolume(parent_dir: Path, name: str) -> None:
    """Create an empty subvolume ``parent_dir/name`` (``BTRFS_IOC_SUBVOL_CREATE``)."""
    _dir_ioctl(parent_dir, IOC_SUBVOL_CREATE, bytearray(_VOL_ARGS.pack(0, _name_bytes(name))), parent_dir / name)


def snapshot_subvolume(source: Path, parent_dir: Path, name: str) -> None:
    """Create ``parent_dir/name`` as a writable snapshot of subvolume `source` (``BTRFS_IOC_SNAP_CREATE_V2``)."""
    raw = _name_bytes(name)
    src = os.open(source, _DIR_FLAGS)
    try:
        _dir_ioctl(parent_dir, IOC_SNAP_CREATE_V2, bytearray(_VOL_ARGS_V2.pack(src, 0, 0, b"", raw)), parent_dir / name)
    finally:
        os.close(src)


def delete_subvolume(parent_dir: Path, name: str) -> None:
    """Delete the subvolume ``parent_dir/name`` (``BTRFS_IOC_SNAP_DESTROY``); it must hold no nested subvolume."""
    _dir_ioctl(parent_dir, IOC_SNAP_DESTROY, bytearray(_VOL_ARGS.pack(0, _name_bytes(name))), parent_dir / name)


def set_read_only(path: Path, read_only: bool = True) -> None:
    """Make subvolume `path` read-only, or writable again (``BTRFS_IOC_SUBVOL_SETFLAGS``, ``BTRFS_SUBVOL_RDONLY``)."""
    _dir_ioctl(path, IOC_SUBVOL_SETFLAGS, bytearray(struct.pack("=Q", SUBVOL_RDONLY if read_only else 0)), path)


def subvolume_id(path: Path) -> int:
    """Return the ID (tree ID) of the subvolume containing `path` (``BTRFS_IOC_INO_LOOKUP``, objectid 256)."""
    buf = bytearray(_INO_LOOKUP_ARGS.pack(0, FIRST_FREE_OBJECTID, b""))
    _dir_ioctl(path, IOC_INO_LOOKUP, buf, path)
    treeid: int = _INO_LOOKUP_ARGS.unpack(buf)[0]
    return treeid


def filesystem_uuid(path: Path) -> str:
    """Return the UUID of the btrfs filesystem holding `path` (``BTRFS_IOC_FS_INFO``)."""
    buf = bytearray(_FS_INFO_ARGS.size)
    _dir_ioctl(path, IOC_FS_INFO, buf, path)
    return str(uuid.UUID(bytes=_FS_INFO_ARGS.unpack(buf)[2]))


def is_subvolume(path: Path) -> bool:
    """True if `path` is the root directory of a btrfs subvolume."""
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_ino == FIRST_FREE_OBJECTID


def _direct_children(subvolume: Path) -> Iterator[Path]:
    """Yield the subvolumes directly inside `subvolume` (its root refs), via ioctls."""
    fd = os.open(subvolume, _DIR_FLAGS)
    try:
        min_treeid = 0
        while True:
            buf = bytearray(_ROOTREF_ARGS.pack(min_treeid, b"", 0))
            try:
                fcntl.ioctl(fd, IOC_GET_SUBVOL_ROOTREF, buf)
                more = False
            except OSError as exc:
                # EOVERFLOW: the buffer of 255 refs is full and more remain.
                if exc.errno != errno.EOVERFLOW:
                    raise OSError(exc.errno, exc.strerror, str(subvolume)) from None
                more = True
            next_min, refs, count = _ROOTREF_ARGS.unpack(buf)
            for i in range(count):
                treeid, dirid = _ROOTREF.unpack_from(refs, i * _ROOTREF.size)
                lookup = bytearray(_INO_LOOKUP_USER_ARGS.pack(dirid, treeid, b"", b""))
                _ioctl(fd, IOC_INO_LOOKUP_USER, lookup, subvolume)
                _, _, name, rel = _INO_LOOKUP_USER_ARGS.unpack(lookup)
                yield subvolume / os.fsdecode(rel.split(b"\0", 1)[0]) / os.fsdecode(name.split(b"\0", 1)[0])
            if not more:
                return
            min_treeid = next_min
    finally:
        os.close(fd)


def nested_subvolumes(subvolume: Path) -> list[Path]:
    """Return every subvolume nested (at any depth) inside `subvolume`, deepest first, not `subvolume` itself.

    Uses ``BTRFS_IOC_GET_SUBVOL_ROOTREF`` and ``BTRFS_IOC_INO_LOOKUP_USER``
    (Linux 4.18), which list nested subvolumes without reading the layer's
    files; falls back to `nested_subvolumes_by_walk` on older kernels.
    """
    try:
        children = list(_direct_children(subvolume))
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return nested_subvolumes_by_walk(subvolume)
    result: list[Path] = []
    for child in children:
        result.extend(nested_subvolumes(child))
        result.append(child)
    return result


def nested_subvolumes_by_walk(subvolume: Path) -> list[Path]:
    """Like `nested_subvolumes`, by walking the tree and looking for inode 256 (slow on big layers)."""
    result: list[Path] = []
    top_dev = os.lstat(subvolume).st_dev
    stack = [subvolume]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                path = Path(entry.path)
                st = entry.stat(follow_symlinks=False)
                if st.st_ino == FIRST_FREE_OBJECTID and st.st_dev != top_dev:
                    result.extend(nested_subvolumes_by_walk(path))
                    result.append(path)
                elif st.st_dev == top_dev:
                    stack.append(path)
                # else: a mount point of another filesystem; not ours to walk
    return result


class _StatFs(ctypes.Structure):
    # Only f_type is read; the buffer is sized generously for every architecture.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


_FS_NAMES = {
    BTRFS_SUPER_MAGIC: "btrfs",
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0x65735546: "fuse",
    0x6969: "nfs",
    0x9FA0: "proc",
    0x858458F6: "ramfs",
    0xFF534D42: "cifs",
    0xF2F52010: "f2fs",
}


def filesystem_type(path: Path) -> tuple[int, str]:
    """Return the ``statfs`` magic number of the filesystem holding `path` and a human name for it."""
    # The process's own symbols hold libc's: `ctypes.util.find_library` would import
    # subprocess and shutil and run `ldconfig -p` on every command (about 5 ms).
    libc = ctypes.CDLL(None, use_errno=True)
    buf = _StatFs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    magic = buf.f_type & 0xFFFFFFFF
    return magic, _FS_NAMES.get(magic, f"a filesystem with magic {magic:#x}")
