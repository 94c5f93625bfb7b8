"""Kernel overlayfs storage driver for layerstore, in the layout of Docker's overlay2.

Install the distribution ``layerstore-overlay`` and select the driver
``overlay``; the entry point ``layerstore.drivers:overlay`` names `OverlayDriver`.
"""

from __future__ import annotations

from .driver import DEFAULT_MOUNT_OPTIONS, OPTIONS, OverlayDriver

__all__ = ["DEFAULT_MOUNT_OPTIONS", "OPTIONS", "OverlayDriver"]

__version__ = "0.1.0"
