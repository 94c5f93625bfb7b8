"""Drivers: discovery and loading (`layerstore.discovery`) and the `Driver` facade (`layerstore.facade`).

This module is the public import path of both; see those modules.
"""

from __future__ import annotations

from .discovery import ENTRY_POINT_GROUP, DriverFactory, available_drivers, load_driver, open_driver
from .facade import TRACE_ENV, Driver

__all__ = [
    "ENTRY_POINT_GROUP",
    "TRACE_ENV",
    "Driver",
    "DriverFactory",
    "available_drivers",
    "load_driver",
    "open_driver",
]
