"""Reading /proc/self/mountinfo: which dataset a path is on, what is mounted where, who holds a mount."""

from __future__ import annotations

import os
from pathlib import Path

from layerstore.mountinfo import MountEntry, mount_of, read_mountinfo

__all__ = ["ZFS_FSTYPES", "MountEntry", "holders", "is_mounted", "mount_of", "read_mountinfo"]

# OpenZFS shows "zfs"; Debian's zfs-fuse shows "fuse.zfs".  The source field is the dataset in both.
ZFS_FSTYPES = frozenset({"zfs", "fuse.zfs"})


def is_mounted(mountpoint: str) -> str | None:
    """Return the source (dataset) mounted at exactly `mountpoint`, or None."""
    found = None
    for entry in read_mountinfo():
        if entry.mountpoint == mountpoint:
            found = entry.source
    return found


def holders(mountpoint: str) -> list[str]:
    """Describe the processes with a file, cwd or root below `mountpoint` (for "busy" errors)."""
    prefix = mountpoint.rstrip("/") + "/"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        base = f"/proc/{pid}"
        links = ["cwd", "root"]
        try:
            links += [f"fd/{fd}" for fd in os.listdir(f"{base}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                target = os.readlink(f"{base}/{link}")
            except OSError:
                continue
            if target == mountpoint or target.startswith(prefix):
                try:
                    comm = Path(base, "comm").read_text().strip()
                except OSError:
                    comm = "?"
                found.append(f"pid {pid} ({comm}) {link} {target}")
                break
    return found
