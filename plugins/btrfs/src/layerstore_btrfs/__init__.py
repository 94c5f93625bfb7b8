"""layerstore-btrfs: the btrfs storage driver of layerstore.

Each layer is a btrfs subvolume and a child layer is a writable snapshot of
its parent, so creating a child costs the same whatever the parent's size.
The entry point ``btrfs`` in the group ``layerstore.drivers`` names
`BtrfsDriver` as the factory.
"""

from __future__ import annotations

from layerstore.sizes import parse_size

from .driver import STORAGE_OPTIONS, BtrfsDriver

__all__ = ["STORAGE_OPTIONS", "BtrfsDriver", "parse_size"]

__version__ = "0.1.0"
