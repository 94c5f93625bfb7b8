"""layerstore-vfs: the storage driver that keeps every layer as a full copy in a plain directory.

Works on any filesystem; shares file data with reflinks on btrfs and xfs.
The entry point ``vfs`` in the group ``layerstore.drivers`` names `VfsDriver`.
"""

from __future__ import annotations

from .driver import VfsDriver

__all__ = ["VfsDriver"]

__version__ = "0.1.0"
