"""Per-layer size limits as btrfs quota groups: enabled on first use, read back from sysfs.

A layer's limit is the ``max_referenced`` of its subvolume's level-0 qgroup
(``0/<subvolume id>``); `btrfs qgroup limit` sets it, and the kernel
refuses writes past it with ``EDQUOT``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from layerstore.process import run_command

__all__ = ["Quota"]


class Quota:
    """The quota groups of the btrfs filesystem holding `home` (UUID `fs_uuid`)."""

    def __init__(self, home: Path, fs_uuid: str) -> None:
        self._home = home
        self._qgroups = Path("/sys/fs/btrfs") / fs_uuid / "qgroups"

    def enabled(self) -> bool:
        """True when quota groups are enabled on the filesystem."""
        return self._qgroups.is_dir()

    def limit(self, subvolume: Path, size: int) -> None:
        """Limit the bytes `subvolume` references to `size`, enabling quotas first when they are off."""
        if not self.enabled():
            run_command(["btrfs", "quota", "enable", str(self._home)])
        run_command(["btrfs", "qgroup", "limit", str(size), str(subvolume)])

    def limit_of(self, subvolume_id: int) -> int | None:
        """The limit set on subvolume `subvolume_id`, or None when it has none (or quotas are off)."""
        with contextlib.suppress(OSError, ValueError):
            value = int((self._qgroups / f"0_{subvolume_id}" / "max_referenced").read_text())
            if value:
                return value
        return None
