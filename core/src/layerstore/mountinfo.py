"""Reading ``/proc/self/mountinfo``: what is mounted where, and which mount holds a path."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

__all__ = ["MountEntry", "backing_filesystem", "mount_of", "read_mountinfo", "unescape"]


@attrs.frozen
class MountEntry:
    """One mount of this process's mount namespace."""

    mountpoint: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """Undo mountinfo's ``\\ooo`` octal escapes (space, tab, newline, backslash)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 4].isdigit() and len(raw[i + 1 : i + 4]) == 3:
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


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
            entries.append(MountEntry(unescape(fields[4]), fields[sep + 1], unescape(fields[sep + 2])))
    return entries


def mount_of(path: str | os.PathLike[str], fstype: str | None = None) -> MountEntry | None:
    """Return the mount (of type `fstype`, if given) holding `path` or its nearest existing ancestor.

    The longest mount point wins; among equal ones the last mounted, as the kernel resolves them.
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    resolved = os.path.realpath(probe)
    best: MountEntry | None = None
    for entry in read_mountinfo():
        if fstype is not None and entry.fstype != fstype:
            continue
        mp = entry.mountpoint
        inside = resolved == mp or resolved.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best.mountpoint)):
            best = entry
    return best


def backing_filesystem(path: str | os.PathLike[str]) -> str:
    """The filesystem type (as in /proc/self/mountinfo) of the mount holding `path` or its nearest existing parent."""
    try:
        entry = mount_of(path)
    except OSError:
        return ""
    return entry.fstype if entry is not None else ""
