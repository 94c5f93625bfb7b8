"""layerstore-copydir: the copydir storage driver for layerstore.

The entry point ``copydir`` in the group ``layerstore.drivers`` names `CopydirDriver`.
"""

from __future__ import annotations

from .driver import CopydirDriver

__all__ = ["CopydirDriver"]
