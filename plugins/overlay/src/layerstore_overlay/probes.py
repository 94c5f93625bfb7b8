"""What the kernel and the backing filesystem offer overlay: one probe per feature, and the cache of answers.

Each probe answers one question about the machine or the driver home:
`kernel_has_overlay`, `filesystem_magic` / `backing_fs`, `dtype_problem`
(readdir reports file types), `trusted_xattr_problem` (the driver keeps
whiteout and opaque marks in ``trusted.*`` xattrs) and `mount_problem` (a
real test mount with the chosen mount API and options).  `choose_mount_api`
runs the test mounts only when the answer is not remembered: a successful
probe is cached in ``<home>/mount-probe`` together with everything it
depends on, and any difference probes again.  Failures are never cached.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Sequence

from layerstore.errors import DriverNotSupported, LayerStoreError
from layerstore.kit import ScratchArea, atomic_write
from layerstore.xattrs import get_xattr

from . import _mount
from ._mount import MountAPI, MountError

__all__ = [
    "FS_NAMES",
    "OVERLAY_MAGIC",
    "PROBE_CACHE",
    "backing_fs",
    "check_support",
    "choose_mount_api",
    "dtype_problem",
    "filesystem_magic",
    "kernel_has_overlay",
    "mount_problem",
    "trusted_xattr_problem",
]

PROBE_CACHE = "mount-probe"
"""The file under the driver home that remembers the last successful probe."""

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
    number = _SYS_GETDENTS64.get(os.uname().machine)
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


def check_support(home: str) -> str:
    """Raise `DriverNotSupported` unless overlay can run here (root, kernel support, `home` not on overlayfs).

    Creates `home` if needed; returns the name of its backing filesystem.
    """
    if os.geteuid() != 0:
        raise DriverNotSupported("overlay needs root (CAP_SYS_ADMIN) to mount")
    if not kernel_has_overlay():
        raise DriverNotSupported("the kernel has no overlay filesystem (not in /proc/filesystems)")
    os.makedirs(home, mode=0o711, exist_ok=True)
    if filesystem_magic(home) == OVERLAY_MAGIC:
        raise DriverNotSupported(f"{home} is on overlayfs itself; put the store on another filesystem")
    return backing_fs(home)


def trusted_xattr_problem(directory: str) -> str | None:
    """None when ``trusted.*`` xattrs can be written and read back on `directory`, else why not."""
    try:
        os.setxattr(directory, "trusted.layerstore-probe", b"1")
        if get_xattr(directory, "trusted.layerstore-probe") != b"1":
            return "a trusted xattr read back wrong"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def mount_problem(api: str, home: str, probe: str, options: Sequence[str]) -> str | None:
    """Mount a test overlay with `api` and `options` in the empty directory `probe` (under `home`).

    Returns None when the mount showed its lower layer, else why not.  The
    test mount is always undone.
    """
    if api == MountAPI.FSOPEN and not _mount.new_api_available():
        return "the new mount API is not available here"
    for d in ("lower1", "lower2", "upper", "work", "merged"):
        os.mkdir(os.path.join(probe, d))
    with open(os.path.join(probe, "lower2", "probe"), "w", encoding="utf-8") as f:
        f.write("ok")
    rel = os.path.relpath(probe, home)
    merged = os.path.join(probe, "merged")
    # A volatile test mount does not sync the whole backing filesystem when
    # it is unmounted (kernels >= 5.10; older ones get a plain retry).
    attempts = [[*options, "volatile"], list(options)] if "volatile" not in options else [list(options)]
    failure = ""
    for attempt in attempts:
        try:
            _mount.mount_overlay(
                api,
                home,
                [f"{rel}/lower1", f"{rel}/lower2"],
                upper=f"{rel}/upper",
                work=f"{rel}/work",
                target=f"{rel}/merged",
                options=attempt,
            )
        except (MountError, LayerStoreError) as exc:
            failure = str(exc)
            continue
        try:
            with open(os.path.join(merged, "probe"), encoding="utf-8") as f:
                seen = f.read()
        finally:
            _mount.unmount(merged)
        return None if seen == "ok" else "the test mount did not show the lower layer"
    return failure


def choose_mount_api(home: str, fs_name: str, staging: ScratchArea, wanted: str, options: Sequence[str]) -> str:
    """Return the mount API that works on `home`: the remembered answer, or the first that a test mount proves.

    `wanted` is ``auto`` (the new API, else classic mount(8)) or one API.
    The cache key holds the kernel release, the backing filesystem and its
    device, `wanted` and `options`.  Raises `DriverNotSupported` naming
    what failed.  Test mounts are made in a `staging` entry, so a probe
    killed half-way is swept like any staging leftover.
    """
    key = "\t".join([os.uname().release, fs_name, str(os.stat(home).st_dev), wanted, *options])
    cache = os.path.join(home, PROBE_CACHE)
    with contextlib.suppress(OSError, UnicodeDecodeError), open(cache, encoding="utf-8") as f:
        cached_key, _, cached_api = f.read().strip().rpartition("\n")
        if cached_key == key and (
            cached_api == MountAPI.CLASSIC or (cached_api == MountAPI.FSOPEN and _mount.new_api_available())
        ):
            return cached_api
    api = _probe(home, fs_name, staging, wanted, options)
    with contextlib.suppress(OSError):
        atomic_write(cache, f"{key}\n{api}", durable=False)
    return api


def _probe(home: str, fs_name: str, staging: ScratchArea, wanted: str, options: Sequence[str]) -> str:
    candidates = [wanted] if wanted != "auto" else [MountAPI.FSOPEN, MountAPI.CLASSIC]
    with staging.reserve("probe") as entry:
        probe = str(entry.path)
        problem = dtype_problem(probe)
        if problem is not None:
            raise DriverNotSupported(f"overlay cannot use {home} ({fs_name}): {problem}")
        problem = trusted_xattr_problem(probe)
        if problem is not None:
            raise DriverNotSupported(f"overlay needs trusted.* xattrs on {home} ({fs_name}): {problem}")
        errors = []
        for api in candidates:
            attempt = os.path.join(probe, api)
            os.mkdir(attempt, 0o700)
            problem = mount_problem(api, home, attempt, options)
            if problem is None:
                return api
            errors.append(f"{api}: {problem}")
    raise DriverNotSupported(f"a test overlay mount under {home} failed: {'; '.join(errors)}")
