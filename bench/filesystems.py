"""Fresh backing filesystems for one benchmark round: loop-mounted ext4/btrfs, or a zfs-fuse pool.

Every store of a round (layerstore, containers-storage, GNU tar's target
directory) lives on one fresh filesystem of the driver's kind, never on the
machine's root filesystem.  Teardown (unmount, loop detach, pool destroy,
stopping the zfs-fuse daemon that the fixture started) runs in ``finally``
blocks of the context managers from `layerstore.testing`, so Ctrl-C and
failures leave nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from layerstore.testing.loop import loop_devices_under, loop_filesystem, mounts_under

# Which backing filesystem each driver is measured on.
FSTYPE_OF_DRIVER: dict[str, str] = {"vfs": "ext4", "overlay": "ext4", "btrfs": "btrfs", "zfs": "zfs"}


@contextlib.contextmanager
def backing_filesystem(workdir: Path, driver: str, size_mb: int) -> Iterator[Path]:
    """Yield the mount point of a fresh filesystem for `driver` (see `FSTYPE_OF_DRIVER`) under `workdir`."""
    fstype = FSTYPE_OF_DRIVER[driver]
    workdir.mkdir(parents=True, exist_ok=True)
    if fstype == "zfs":
        from layerstore.testing.zfsfuse import zfs_fuse_pool

        with zfs_fuse_pool(workdir, size_mb) as (_pool, mountpoint):
            yield Path(mountpoint)
        return
    mkfs_args: tuple[str, ...] = ()
    if fstype == "ext4":
        # Initialise inode tables now, not in the background while we measure.
        mkfs_args = ("-E", "lazy_itable_init=0,lazy_journal_init=0")
    with loop_filesystem(workdir, fstype, size_mb, mkfs_args) as mnt:
        yield mnt


def leftovers(workdir: Path) -> list[str]:
    """Mounts and loop devices still present below `workdir` (should be empty after a round)."""
    return mounts_under(workdir) + loop_devices_under(workdir)


def abort_fuse_mounts(path: Path) -> list[str]:
    """Abort the FUSE connections of the mounts below `path` (a hung zfs-fuse); return their mount points.

    Every process blocked on them gets ENOTCONN, so teardown can proceed.
    Uses the fusectl filesystem, mounting it for the moment if needed.
    """
    root = os.path.realpath(path).rstrip("/") + "/"
    targets: list[tuple[str, str]] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype.startswith("fuse") and (fields[4] + "/").startswith(root):
                targets.append((fields[4], fields[2].split(":")[1]))
    if not targets:
        return []
    ctl = Path("/sys/fs/fuse/connections")
    mounted_here = False
    if not os.path.ismount(ctl):
        mounted_here = subprocess.run(["mount", "-t", "fusectl", "none", str(ctl)], check=False).returncode == 0
    try:
        for _mnt, minor in targets:
            with contextlib.suppress(OSError):
                (ctl / minor / "abort").write_text("1")
    finally:
        if mounted_here:
            subprocess.run(["umount", str(ctl)], check=False)
    return [mnt for mnt, _ in targets]


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path`."""
    return shutil.disk_usage(path).free
