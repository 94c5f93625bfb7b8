"""Loop-mounted filesystems for tests and benchmarks.

`loop_filesystem` makes a fresh filesystem of a given type on a sparse image
file, attaches it to a loop device, mounts it and yields the mount point; on
exit it unmounts, detaches and deletes the image, also when the body raised.
`loop_filesystem_or_unavailable` is the same for pytest fixtures: when the
machine cannot do it (no root, missing ``mkfs``, no loop device, no kernel
support) it reports the driver as unavailable through
`layerstore.testing.unavailable` (a skip, or a failure under CI).

`mounts_under` and `loop_devices_under` let a test check that nothing was
left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import CommandFailed
from ..mountinfo import read_mountinfo
from ..process import run_command

__all__ = [
    "LARGE_XATTRS",
    "MKFS_COMMANDS",
    "loop_devices_under",
    "loop_filesystem",
    "loop_filesystem_or_unavailable",
    "loop_support_problem",
    "mounts_under",
]

MKFS_COMMANDS: dict[str, tuple[str, ...]] = {
    "btrfs": ("mkfs.btrfs", "-q"),
    "ext4": ("mkfs.ext4", "-q", "-F"),
    "xfs": ("mkfs.xfs", "-q", "-f"),
}
"""How to make each filesystem type non-interactively on an image file; other types run plain ``mkfs.<type>``."""

LARGE_XATTRS: dict[str, tuple[str, ...]] = {
    "btrfs": ("-n", "65536"),
    "ext4": ("-O", "ea_inode"),
}
"""``mkfs`` arguments that let a filesystem hold extended attribute values up to the VFS limit of 64 KiB.

By default btrfs keeps a value within one 16 KiB tree node and ext4 within
one 4 KiB block; the conformance suite stores values of 60 KiB.
"""

_UMOUNT_ATTEMPTS = 20
_UMOUNT_PAUSE = 0.1  # seconds; a just-closed file or a udev probe keeps a mount busy only briefly


def _mkfs_argv(fstype: str, mkfs_args: Sequence[str], image: Path) -> list[str]:
    base = MKFS_COMMANDS.get(fstype, (f"mkfs.{fstype}",))
    return [*base, *mkfs_args, str(image)]


def loop_support_problem(fstype: str) -> str | None:
    """Return why a loop-mounted `fstype` filesystem cannot be made here, or None when it looks possible.

    Checks what can be checked without side effects: root privilege, the
    ``mkfs``, ``losetup``, ``mount`` and ``umount`` programs, and
    ``/dev/loop-control``.  Kernel support shows only when mounting.
    """
    if os.geteuid() != 0:
        return "loop devices and mounts need root (run the tests as root)"
    mkfs = _mkfs_argv(fstype, (), Path("x"))[0]
    for program in (mkfs, "losetup", "mount", "umount"):
        if shutil.which(program) is None:
            hint = " (Debian: apt-get install btrfs-progs)" if program == "mkfs.btrfs" else ""
            return f"program {program} not found{hint}"
    if not os.path.exists("/dev/loop-control"):
        return "/dev/loop-control is missing: the kernel has no loop device support here"
    return None


@contextlib.contextmanager
def loop_filesystem(
    workdir: Path,
    fstype: str,
    size_mb: int,
    mkfs_args: Sequence[str] = (),
    *,
    mountpoint: Path | None = None,
    mount_options: Sequence[str] = (),
) -> Iterator[Path]:
    """Make, loop-attach and mount a fresh `fstype` filesystem of `size_mb` MiB; yield its mount point.

    The image is a sparse file in `workdir` (created if needed); the mount
    point is `mountpoint` or ``workdir/mnt``.  On exit, even when the body or
    the setup raised, the filesystem is unmounted (retried while busy, lazily
    as a last resort), the loop device detached and the image deleted.  Any
    command failing during setup raises `CommandFailed` after tearing down
    what was already set up.
    """
    if size_mb < 1:
        raise ValueError(f"size_mb must be >= 1, got {size_mb}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mnt = Path(mountpoint) if mountpoint is not None else workdir / "mnt"
    fd, name = tempfile.mkstemp(prefix=f"{fstype}-", suffix=".img", dir=workdir)
    image = Path(name)
    try:
        os.ftruncate(fd, size_mb * 1024 * 1024)
    finally:
        os.close(fd)
    try:
        run_command(_mkfs_argv(fstype, mkfs_args, image))
        device = run_command(["losetup", "--find", "--show", str(image)]).stdout.decode().strip()
        try:
            mnt.mkdir(parents=True, exist_ok=True)
            argv = ["mount", "-t", fstype]
            if mount_options:
                argv += ["-o", ",".join(mount_options)]
            run_command([*argv, device, str(mnt)])
            try:
                yield mnt
            finally:
                _unmount(mnt)
        finally:
            _detach(device)
    finally:
        image.unlink(missing_ok=True)


def _busy(proc: subprocess.CompletedProcess[bytes]) -> bool:
    return proc.returncode != 0 and b"busy" in proc.stderr.lower()


def _run_while_busy(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run `argv`, retrying with a short pause while it fails with "busy"; return the last result."""
    for _ in range(_UMOUNT_ATTEMPTS - 1):
        proc = run_command(argv, check=False)
        if not _busy(proc):
            return proc
        time.sleep(_UMOUNT_PAUSE)
    return run_command(argv, check=False)


def _unmount(mnt: Path) -> None:
    """Unmount `mnt`, retrying while it is busy, and detaching it lazily if it stays busy."""
    proc = _run_while_busy(["umount", str(mnt)])
    if _busy(proc):
        # Still busy (a process has its cwd or a file there): detach it from the
        # tree now; the kernel frees it, and the loop device, when the last user goes.
        run_command(["umount", "--lazy", str(mnt)])
    elif proc.returncode != 0 and os.path.ismount(mnt):
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))


def _detach(device: str) -> None:
    """Detach loop `device`; the kernel defers it (autoclear) while the device is still open."""
    proc = _run_while_busy(["losetup", "--detach", device])
    if proc.returncode != 0:
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))


@contextlib.contextmanager
def loop_filesystem_or_unavailable(
    driver_name: str,
    workdir: Path,
    fstype: str,
    size_mb: int,
    mkfs_args: Sequence[str] = (),
    *,
    mountpoint: Path | None = None,
    mount_options: Sequence[str] = (),
) -> Iterator[Path]:
    """`loop_filesystem` for pytest fixtures: report `driver_name` unavailable when this machine cannot do it.

    A missing privilege, program or loop device, or a failing ``mkfs``,
    ``losetup`` or ``mount`` calls `layerstore.testing.unavailable` (a skip,
    or a failure under CI).  Errors raised by the body propagate unchanged.
    """
    from . import unavailable

    problem = loop_support_problem(fstype)
    if problem is not None:
        unavailable(driver_name, f"cannot make a loop-mounted {fstype} filesystem: {problem}")
    manager = loop_filesystem(workdir, fstype, size_mb, mkfs_args, mountpoint=mountpoint, mount_options=mount_options)
    with contextlib.ExitStack() as stack:
        try:
            mnt = stack.enter_context(manager)
        except CommandFailed as exc:
            unavailable(driver_name, f"cannot make a loop-mounted {fstype} filesystem: {exc}")
        yield mnt


def mounts_under(path: Path) -> list[str]:
    """Return the mount points at or below `path` (from ``/proc/self/mountinfo``)."""
    root = os.path.realpath(path)
    prefix = root.rstrip("/") + "/"
    return [e.mountpoint for e in read_mountinfo() if e.mountpoint == root or e.mountpoint.startswith(prefix)]


def loop_devices_under(path: Path) -> list[str]:
    """Return the loop devices (``/dev/loopN``) whose backing file lies at or below `path`."""
    root = os.path.realpath(path).rstrip("/") + "/"
    found = []
    for entry in sorted(Path("/sys/block").glob("loop*")):
        try:
            backing = (entry / "loop" / "backing_file").read_text().rstrip("\n")
        except OSError:
            continue  # not attached
        backing = backing.removesuffix(" (deleted)")
        if (backing + "/").startswith(root):
            found.append(f"/dev/{entry.name}")
    return found
