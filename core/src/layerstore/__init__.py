"""layerstore: a store for layered filesystem images with pluggable storage drivers.

Public API: `load_driver`, `available_drivers`, `Driver`, `Graph`, `Image`,
`Change`, `ChangeKind`, `CreateOpts`, `Capabilities`, `IDMap`, `IDMappings`,
`hookimpl` for driver authors, and the exception types of
`layerstore.errors` (`LayerStoreError` and its subclasses).  Driver
authors also use `layerstore.kit` and `layerstore.conformance`; see
``docs/driver-guide.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capabilities import Capabilities, CreateOpts
    from .change import Change, ChangeKind
    from .drivers import Driver, available_drivers, load_driver, open_driver
    from .errors import (
        AmbiguousID,
        CommandFailed,
        ConfigError,
        CorruptMetadata,
        DigestMismatch,
        DriverNotFound,
        DriverNotSupported,
        ImageNotFound,
        InvalidArchive,
        InvalidDriver,
        InvalidID,
        LayerExists,
        LayerInUse,
        LayerNotFound,
        LayerStoreError,
        LimitExceeded,
        StorageError,
        StorageFull,
    )
    from .graph import Graph
    from .hookspecs import hookimpl
    from .idtools import IDMap, IDMappings
    from .image import Image

__all__ = [
    "AmbiguousID",
    "Capabilities",
    "Change",
    "ChangeKind",
    "CommandFailed",
    "ConfigError",
    "CorruptMetadata",
    "CreateOpts",
    "DigestMismatch",
    "Driver",
    "DriverNotFound",
    "DriverNotSupported",
    "Graph",
    "IDMap",
    "IDMappings",
    "Image",
    "ImageNotFound",
    "InvalidArchive",
    "InvalidDriver",
    "InvalidID",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "LayerStoreError",
    "LimitExceeded",
    "StorageError",
    "StorageFull",
    "available_drivers",
    "hookimpl",
    "load_driver",
    "open_driver",
]

__version__ = "0.1.0"

from .errors import __all__ as _ERROR_NAMES

# Every name is imported on first use: the command line's --help and the
# pytest plugin need none of them, and a driver needs only a few.
_HOMES = {
    "Capabilities": "capabilities",
    "CreateOpts": "capabilities",
    "Change": "change",
    "ChangeKind": "change",
    "Driver": "drivers",
    "available_drivers": "drivers",
    "load_driver": "drivers",
    "open_driver": "drivers",
    "Graph": "graph",
    "hookimpl": "hookspecs",
    "IDMap": "idtools",
    "IDMappings": "idtools",
    "Image": "image",
}
# Every exception type of layerstore.errors is exported too, also those added
# there later (the errors module is small and imports nothing heavy).
_HOMES.update(dict.fromkeys(_ERROR_NAMES, "errors"))
__all__ += [name for name in _ERROR_NAMES if name not in __all__]

# Submodules that `import layerstore` used to load as a side effect.
_SUBMODULES = frozenset({"capabilities", "change", "drivers", "errors", "hookspecs", "idtools"})


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'layerstore' has no attribute {name!r}")
    globals()[name] = value
    return value
