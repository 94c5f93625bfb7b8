"""Whether the btrfs driver can run on a home: the backing filesystem, and one subvolume created and deleted.

Each probe raises `DriverNotSupported` with the reason, so selection moves
on to the next driver and ``layerstore drivers`` can say why not.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from layerstore.errors import DriverNotSupported

from . import _btrfs

if TYPE_CHECKING:
    from pathlib import Path

    from layerstore.kit import ScratchArea

__all__ = ["check_backing_filesystem", "check_subvolumes"]


def check_backing_filesystem(home: Path) -> None:
    """Raise `DriverNotSupported` unless `home` (or, before it exists, its nearest ancestor) is on btrfs."""
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        magic, name = _btrfs.filesystem_type(probe)
    except OSError as exc:
        raise DriverNotSupported(f"btrfs: cannot inspect the filesystem of {home}: {exc.strerror}") from None
    if magic != _btrfs.BTRFS_SUPER_MAGIC:
        raise DriverNotSupported(f"btrfs: {home} is on {name}, not btrfs")


def check_subvolumes(home: Path, staging: ScratchArea) -> None:
    """Create and delete a subvolume in `staging`, so that an unprivileged process is told why not here."""
    created = False
    try:
        with staging.reserve("probe", make_dir=False) as entry:
            _btrfs.create_subvolume(entry.path.parent, entry.path.name)
            created = True
            try:
                _btrfs.delete_subvolume(entry.path.parent, entry.path.name)
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)  # an empty subvolume, where the kernel lets users rmdir it
                raise
    except OSError as exc:
        if not created:
            raise DriverNotSupported(f"btrfs: cannot create subvolumes in {home}: {exc.strerror}") from None
        raise DriverNotSupported(
            f"btrfs: cannot delete subvolumes in {home}: {exc.strerror} "
            "(run as root, or mount the filesystem with user_subvol_rm_allowed)"
        ) from None
