"""layerstore-zfs: the ZFS storage driver of layerstore.

Each layer is a dataset below a parent dataset; a child layer is a clone of a
snapshot of its parent.  It speaks only the ``zfs``/``zpool`` command line
that both OpenZFS and Debian's zfs-fuse understand.
"""

from __future__ import annotations

from .driver import ZfsDriver

__all__ = ["ZfsDriver"]

__version__ = "0.1.0"
