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
import shutil
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


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding `path`."""
    return shutil.disk_usage(path).free
