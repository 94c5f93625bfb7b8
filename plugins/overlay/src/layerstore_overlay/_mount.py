"""Mounting and unmounting overlayfs: the new mount API (fsopen) and classic mount(8) as fallback.

The new mount API passes each lower directory as its own ``lowerdir+``
parameter, so neither the 4096-byte limit of mount(2) data nor the 256-byte
limit of one fsconfig string bounds the chain: the kernel's own limit of 500
lower layers does.  Classic mount(8) runs with the driver home as working
directory so that the short relative links keep the data under one page.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Sequence

from layerstore.errors import CommandFailed, ConfigError, LayerStoreError, LimitExceeded
from layerstore.process import run_command

__all__ = [
    "CLASSIC_MAX_LOWERS",
    "DEFAULT_MOUNT_OPTIONS",
    "KERNEL_MAX_LOWERS",
    "MountAPI",
    "MountError",
    "bind_read_only",
    "is_mounted",
    "mount_overlay",
    "new_api_available",
    "overlay_options",
    "parse_mount_options",
    "unmount",
]

KERNEL_MAX_LOWERS = 500
"""OVL_MAX_STACK: the kernel refuses more lower layers than this."""
CLASSIC_MAX_LOWERS = 128
"""With mount(2) data limited to a page, 128 short links (29 bytes each) leave room for the rest."""
PAGE_DATA_LIMIT = 4095


DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = ("redirect_dir=off", "metacopy=off", "index=off")
"""Renamed directories and metadata-only copy-ups would leave diff/ incomplete for the native diff."""
_DIRECTORY_OPTIONS = frozenset({"upperdir", "lowerdir", "workdir", "lowerdir+", "datadir+"})


def parse_mount_options(text: str) -> list[str]:
    """Split the driver option ``mountopt`` (comma-separated); `ConfigError` if it names directories.

    The driver chooses every layer's directories inside the store: an
    ``upperdir`` given here would send writes elsewhere.
    """
    options = [o.strip() for o in text.split(",") if o.strip()]
    named = sorted({o.partition("=")[0] for o in options} & _DIRECTORY_OPTIONS)
    if named:
        raise ConfigError(
            f"overlay driver option mountopt must not name directories ({', '.join(named)}): the driver "
            "chooses each layer's directories inside the store; remove them from mountopt"
        )
    return options


def overlay_options(api: str, extra: list[str], mount_label: str = "") -> list[str]:
    """The options of a layer's mount: `DEFAULT_MOUNT_OPTIONS`, the configured `extra` ones, the SELinux label."""
    options = [*DEFAULT_MOUNT_OPTIONS, *extra]
    if mount_label and os.path.exists("/sys/fs/selinux/enforce"):
        # mount(8) data needs the label quoted (it may hold commas); fsconfig takes the value as is.
        quoted = mount_label if api == MountAPI.FSOPEN else f'"{mount_label}"'
        options.append(f"context={quoted}")
    return options


class MountAPI:
    """Names of the two ways to mount."""

    FSOPEN = "fsopen"
    CLASSIC = "mount"


class MountError(LayerStoreError):
    """Mounting an overlay failed; the message carries the kernel's own explanation."""


# Syscall numbers of the new mount API are the same on every architecture
# that uses the generic table (x86_64 and aarch64 alike, since Linux 5.2).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 0x1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_SUPPORTED_MACHINES = ("x86_64", "aarch64", "arm64")
_FSOPEN_CLOEXEC = 0x1
_FSMOUNT_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100
_MNT_DETACH = 0x2
_FSCONFIG_STRING_MAX = 255  # fsconfig copies at most 256 bytes including the NUL

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.umount2.restype = ctypes.c_int


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _kernel_messages(fs_fd: int) -> str:
    """Read the error log the kernel keeps in a filesystem context ("e overlay: ..." lines)."""
    lines = []
    while True:
        try:
            data = os.read(fs_fd, 4096)
        except OSError:
            break
        if not data:
            break
        lines.append(data.decode(errors="replace").strip())
    return "; ".join(line for line in lines if line)


def _fsconfig(fs_fd: int, key: str, value: str | None) -> None:
    if value is None:
        _syscall(_SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(_FSCONFIG_SET_FLAG), key.encode(), None, 0)
    else:
        _syscall(
            _SYS_FSCONFIG,
            ctypes.c_int(fs_fd),
            ctypes.c_uint(_FSCONFIG_SET_STRING),
            key.encode(),
            os.fsencode(value),
            0,
        )


def new_api_available() -> bool:
    """True when this machine's architecture has the generic syscall numbers and the kernel has fsopen."""
    if os.uname().machine not in _SUPPORTED_MACHINES:
        return False
    try:
        fd = _syscall(_SYS_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    except OSError:
        return False
    os.close(fd)
    return True


def _split_options(options: Sequence[str]) -> list[tuple[str, str | None]]:
    result: list[tuple[str, str | None]] = []
    for option in options:
        key, sep, value = option.partition("=")
        result.append((key, value if sep else None))
    return result


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _move_mount(mnt_fd: int, target: str) -> None:
    try:
        _syscall(
            _SYS_MOVE_MOUNT,
            ctypes.c_int(mnt_fd),
            b"",
            ctypes.c_int(_AT_FDCWD),
            os.fsencode(target),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
        )
    except OSError as exc:
        raise MountError(f"cannot attach mount at {target}: {exc.strerror}") from None


def bind_read_only(api: str, source: str, target: str) -> None:
    """Bind-mount directory `source` read-only at `target` (a read-only base layer, which has no overlay)."""
    if api == MountAPI.CLASSIC:
        try:
            run_command(["mount", "--bind", "-o", "ro", source, target])
        except CommandFailed as exc:
            raise MountError(f"cannot bind-mount {source} at {target}: {exc.stderr.strip() or exc}") from None
        return
    try:
        tree_fd = _syscall(
            _SYS_OPEN_TREE,
            ctypes.c_int(_AT_FDCWD),
            os.fsencode(source),
            ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC),
        )
    except OSError as exc:
        raise MountError(f"cannot bind-mount {source}: {exc.strerror}") from None
    try:
        attr = _MountAttr(attr_set=_MOUNT_ATTR_RDONLY)
        try:
            _syscall(
                _SYS_MOUNT_SETATTR,
                ctypes.c_int(tree_fd),
                b"",
                ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
        except OSError as exc:
            raise MountError(f"cannot make the bind mount of {source} read-only: {exc.strerror}") from None
        _move_mount(tree_fd, target)
    finally:
        os.close(tree_fd)


def _mount_fsopen(
    lowers: Sequence[str], *, upper: str, work: str, target: str, options: Sequence[str], read_only: bool
) -> None:
    fs_fd = _syscall(_SYS_FSOPEN, b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    held: list[int] = []
    step = "fsopen"
    try:
        try:
            step = "source"
            _fsconfig(fs_fd, "source", "overlay")
            for lower in lowers:
                step = f"lowerdir+={lower}"
                path = lower
                if len(os.fsencode(path)) > _FSCONFIG_STRING_MAX:
                    # A path too long for one fsconfig string reaches the
                    # kernel through a short /proc/self/fd magic link.
                    fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    held.append(fd)
                    path = f"/proc/self/fd/{fd}"
                _fsconfig(fs_fd, "lowerdir+", path)
            for key, value in (("upperdir", upper), ("workdir", work)):
                step = f"{key}={value}"
                if len(os.fsencode(value)) > _FSCONFIG_STRING_MAX:
                    fd = os.open(value, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    held.append(fd)
                    value = f"/proc/self/fd/{fd}"
                _fsconfig(fs_fd, key, value)
            for key, opt_value in _split_options(options):
                step = key if opt_value is None else f"{key}={opt_value}"
                _fsconfig(fs_fd, key, opt_value)
            step = "create"
            _syscall(_SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(_FSCONFIG_CMD_CREATE), None, None, 0)
            step = "fsmount"
            mnt_fd = _syscall(
                _SYS_FSMOUNT,
                ctypes.c_int(fs_fd),
                ctypes.c_uint(_FSMOUNT_CLOEXEC),
                ctypes.c_uint(_MOUNT_ATTR_RDONLY if read_only else 0),
            )
        except OSError as exc:
            detail = _kernel_messages(fs_fd) or exc.strerror or str(exc)
            if exc.errno == errno.EINVAL and "too many lower" in detail:
                raise LimitExceeded(
                    f"cannot mount overlay at {target}: {len(lowers)} lower layers exceed the kernel limit "
                    f"of {KERNEL_MAX_LOWERS} ({detail})"
                ) from None
            raise MountError(f"cannot mount overlay at {target} ({step}): {detail}") from None
        try:
            _move_mount(mnt_fd, target)
        finally:
            os.close(mnt_fd)
    finally:
        os.close(fs_fd)
        for fd in held:
            os.close(fd)


def _mount_classic(
    home: str,
    lowers: Sequence[str],
    *,
    upper: str,
    work: str,
    target: str,
    options: Sequence[str],
    read_only: bool,
) -> None:
    data = ",".join([f"lowerdir={':'.join(lowers)}", f"upperdir={upper}", f"workdir={work}", *options])
    if len(data.encode()) > PAGE_DATA_LIMIT:
        raise LimitExceeded(
            f"cannot mount overlay at {target}: mount data of {len(data.encode())} bytes exceeds the page "
            f"limit of {PAGE_DATA_LIMIT} ({len(lowers)} lower layers; use a kernel with the new mount API)"
        )
    try:
        # `env -C` gives mount(8) the home as working directory without
        # changing the working directory of this (possibly threaded) process.
        flags = ["-r"] if read_only else []
        run_command(["env", "-C", home, "mount", *flags, "-t", "overlay", "overlay", "-o", data, target])
    except CommandFailed as exc:
        raise MountError(f"cannot mount overlay at {target}: {exc.stderr.strip() or exc}") from None


def mount_overlay(
    api: str,
    home: str,
    lowers: Sequence[str],
    *,
    upper: str,
    work: str,
    target: str,
    options: Sequence[str] = (),
    read_only: bool = False,
) -> None:
    """Mount an overlay of `lowers` (top-down) under `upper` at `target` with `api`.

    Paths are relative to `home` (the fsopen path makes them absolute itself).
    Raises `LimitExceeded` for too many lowers, `MountError` otherwise.
    """
    if api == MountAPI.FSOPEN:
        _mount_fsopen(
            [os.path.join(home, p) for p in lowers],
            upper=os.path.join(home, upper),
            work=os.path.join(home, work),
            target=os.path.join(home, target),
            options=options,
            read_only=read_only,
        )
    else:
        _mount_classic(
            home,
            lowers,
            upper=upper,
            work=work,
            target=os.path.join(home, target),
            options=options,
            read_only=read_only,
        )


def is_mounted(path: str, bind_source: str | None = None) -> bool:
    """True when `path` is a mount point, or shows the directory `bind_source` (a bind mount on the same fs)."""
    if os.path.ismount(path):
        return True
    if bind_source is None:
        return False
    try:
        return os.path.samestat(os.stat(path), os.stat(bind_source))
    except OSError:
        return False


def unmount(path: str, *, attempts: int = 6) -> None:
    """Unmount `path`; retry while busy, detach lazily as the last resort; a path not mounted is fine."""
    encoded = os.fsencode(path)
    pause = 0.02
    for _ in range(attempts):
        if _libc.umount2(encoded, 0) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not a mount point (any more)
        if err != errno.EBUSY:
            raise MountError(f"cannot unmount {path}: {os.strerror(err)}")
        time.sleep(pause)
        pause *= 2
    if _libc.umount2(encoded, _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise MountError(f"cannot unmount {path}: {os.strerror(err)}")
