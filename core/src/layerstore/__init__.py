"""layerstore: a store for layered filesystem images with pluggable storage drivers.

Public API (see DESIGN §9): `load_driver`, `available_drivers`, `Driver`,
`Graph`, `Image`, `Change`, `ChangeKind`, `CreateOpts`, `Capabilities`,
`IDMap`, `IDMappings`, and `hookimpl` for driver authors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .capabilities import Capabilities, CreateOpts
from .change import Change, ChangeKind
from .drivers import Driver, available_drivers, load_driver, open_driver
from .hookspecs import hookimpl
from .idtools import IDMap, IDMappings

if TYPE_CHECKING:
    from .graph import Graph
    from .image import Image

__all__ = [
    "Capabilities",
    "Change",
    "ChangeKind",
    "CreateOpts",
    "Driver",
    "Graph",
    "IDMap",
    "IDMappings",
    "Image",
    "available_drivers",
    "hookimpl",
    "load_driver",
    "open_driver",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The image store is imported on first use so that drivers and the pytest
    # plugin do not pay for it.
    if name == "Graph":
        from .graph import Graph

        return Graph
    if name == "Image":
        from .image import Image

        return Image
    raise AttributeError(f"module 'layerstore' has no attribute {name!r}")
