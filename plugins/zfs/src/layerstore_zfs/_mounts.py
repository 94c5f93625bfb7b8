"""Reading /proc/self/mountinfo: which dataset a path is on, what is mounted where, who holds a mount."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

__all__ = ["ZFS_FSTYPES", "MountEntry", "holders", "is_mounted", "mount_of", "read_mountinfo"]

# OpenZFS shows "zfs"; Debian's zfs-fuse shows "fuse.zfs".  The source field is the dataset in both.
ZFS_FSTYPES = frozenset({"zfs", "fuse.zfs"})


@attrs.frozen
class MountEntry:
    """One line of /proc/self/mountinfo (the fields this driver needs)."""

    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def read_mountinfo() -> list[MountEntry]:
    """Return the mounts of this process's mount namespace, in mount order."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            if len(fields) < sep + 3:
                continue
            entries.append(MountEntry(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])))
    return entries


def mount_of(path: Path) -> MountEntry | None:
    """Return the mount that holds `path` (or its nearest existing ancestor); the last mounted wins."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    resolved = str(probe.resolve())
    best: MountEntry | None = None
    for entry in read_mountinfo():
        mp = entry.mountpoint
        if (resolved == mp or resolved.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mountpoint)
        ):
            best = entry
    return best


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
