"""Driver discovery and loading: entry points of the group ``layerstore.drivers``, factories, the facade.

``load_driver(name, home, ...)`` finds the entry point `name`, imports its
factory, checks the hook API version the factory declares, calls it, and
wraps the plugin it returns in a `layerstore.facade.Driver`.
"""

from __future__ import annotations

import os
import pkgutil
import re
import sys
from collections.abc import Callable, Mapping
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from . import hookspecs
from .errors import DriverNotFound, DriverNotSupported, InvalidDriver, LayerStoreError
from .facade import Driver
from .idtools import IDMappings

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_DRIVER_INSTALLED",
    "DriverFactory",
    "available_drivers",
    "driver_entry_points",
    "installed_driver_names",
    "load_driver",
    "no_such_driver",
    "open_driver",
]

ENTRY_POINT_GROUP = "layerstore.drivers"
NO_DRIVER_INSTALLED = "no storage driver is installed; install one, e.g. `pip install layerstore-vfs`"
"""The one message for an installation without drivers (commands and selection print it)."""

DriverFactory = Callable[[Path, Mapping[str, str], IDMappings], object]


def _distribution_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


# The last scan of the installed distributions, keyed by the search path it scanned: selecting and
# opening a driver both ask, and one scan reads the metadata of every distribution on the path.
_scanned: dict[tuple[str, ...], dict[str, Any]] = {}


def driver_entry_points() -> dict[str, Any]:
    """Entry points by driver name; `InvalidDriver` naming both distributions when two register one name.

    The installed distributions are read once per search path (``sys.path``) in a process.
    """
    key = tuple(sys.path)
    found = _scanned.get(key)
    if found is None:
        found = _scan_entry_points()
        _scanned.clear()
        _scanned[key] = found
    return dict(found)


def _scan_entry_points() -> dict[str, Any]:
    entry_points = _dist_info_entry_points()
    if entry_points is None:  # something the plain scan does not cover: the library decides
        import importlib_metadata

        entry_points = list(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP))
    found: dict[str, Any] = {}
    for ep in entry_points:
        earlier = found.get(ep.name)
        if earlier is None:
            found[ep.name] = ep
            continue
        first, second = _distribution_name(earlier), _distribution_name(ep)
        if first != second or earlier.value != ep.value:
            raise InvalidDriver(
                f"driver name {ep.name!r} is registered by two distributions, {first} ({earlier.value}) and "
                f"{second} ({ep.value}); uninstall one of them"
            )
    return found


class _EntryPoint:
    """An entry point read from a ``*.dist-info`` directory, as importlib_metadata would give it.

    Importing importlib_metadata and reading every distribution's metadata cost
    more than the rest of a short command's start, so the common layout is read
    here; the distribution (for its name) is made by importlib_metadata on demand.
    """

    def __init__(self, name: str, value: str, group: str, info: str) -> None:
        self.name = name
        self.value = value
        self.group = group
        self._info = info

    @property
    def dist(self) -> Any:
        import importlib_metadata

        return importlib_metadata.PathDistribution(Path(self._info))

    def load(self) -> Any:
        match = _EP_VALUE.match(self.value)
        if match is None:  # the library's own error for a malformed value
            import importlib_metadata

            return importlib_metadata.EntryPoint(self.name, self.value, self.group).load()
        return pkgutil.resolve_name(f"{match['module']}:{match['attr'] or ''}")


# The syntax of an entry point's value (``module:attr [extras]``), as importlib_metadata parses it.
_EP_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def _dist_info_entry_points() -> list[_EntryPoint] | None:
    """The group's entry points of the ``*.dist-info`` directories on ``sys.path``, in importlib_metadata's order.

    None when importlib_metadata might answer differently: another finder of
    distributions on ``sys.meta_path``, a zip or egg on the path, ``*.egg-info``,
    two distributions of one name, a driver's distribution without ``METADATA``,
    or an ``entry_points.txt`` that is not UTF-8 or has a line without ``=``.
    """
    if any(getattr(finder, "find_distributions", None) is not None and finder is not PathFinder
           and getattr(finder, "__module__", "") != "importlib_metadata" for finder in sys.meta_path):
        return None
    seen: set[str] = set()
    found: list[_EntryPoint] = []
    for entry in sys.path:
        if not isinstance(entry, str) or os.path.basename(entry).lower().endswith(".egg"):
            return None
        try:
            children = os.listdir(entry or ".")
        except NotADirectoryError:
            return None  # a zip file
        except OSError:
            continue  # a missing directory has no distributions
        for child in children:
            low = child.lower()
            if low.endswith(".egg-info"):
                return None
            if not low.endswith(".dist-info"):
                continue
            name = re.sub(r"[-_.]+", "_", low.rpartition(".")[0].partition("-")[0])
            if name in seen:
                return None
            seen.add(name)
            info = os.path.join(entry, child)
            try:
                text = Path(info, "entry_points.txt").read_text(encoding="utf-8")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                continue
            except (OSError, UnicodeDecodeError):
                return None
            ours = _group_entries(text)
            if ours is None or (ours and not _has_metadata(info)):
                return None
            found.extend(_EntryPoint(ep_name, value, ENTRY_POINT_GROUP, info) for ep_name, value in ours)
    return found


def _group_entries(text: str) -> list[tuple[str, str]] | None:
    """The ``(name, value)`` pairs of our group in an ``entry_points.txt``; None for a line without ``=``."""
    section = None
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section is not None:
            name, sep, value = line.partition("=")
            if not sep:
                return None
            if section == ENTRY_POINT_GROUP:
                pairs.append((name.strip(), value.strip()))
    return pairs


def _has_metadata(info: str) -> bool:
    try:
        return os.stat(os.path.join(info, "METADATA")).st_size > 0
    except OSError:
        return False


def installed_driver_names() -> list[str]:
    """The names of the installed drivers, sorted; unlike `available_drivers`, no distribution metadata is read."""
    return sorted(driver_entry_points())


def available_drivers() -> dict[str, str]:
    """Return the installed drivers as ``{name: distribution name}``, sorted by name."""
    return {name: _distribution_name(ep) for name, ep in sorted(driver_entry_points().items())}


def no_such_driver(name: str) -> DriverNotFound:
    """The `DriverNotFound` for an unknown driver `name`, listing the installed drivers (or saying there is none)."""
    installed = installed_driver_names()
    if not installed:
        return DriverNotFound(f"no storage driver named {name!r}: {NO_DRIVER_INSTALLED}")
    return DriverNotFound(f"no storage driver named {name!r}; installed drivers: {', '.join(installed)}")


def load_driver(
    name: str,
    home: str | os.PathLike[str],
    options: Mapping[str, str] | None = None,
    id_maps: IDMappings | None = None,
    *,
    runroot: str | os.PathLike[str] | None = None,
) -> Driver:
    """Open the installed driver `name` on `home` and return its facade.

    Mount references are kept under `runroot` (default: see
    `layerstore.references.default_runroot`).  Raises `DriverNotFound` (listing the installed drivers) for an unknown
    name, `DriverNotSupported` with the reason when the driver cannot run
    here, `InvalidDriver` when the driver does not implement the contract.
    """
    ep = driver_entry_points().get(name)
    if ep is None:
        raise no_such_driver(name)
    try:
        factory = ep.load()
    except Exception as exc:  # a broken distribution must not crash selection with a traceback
        raise InvalidDriver(f"driver {name!r} failed to import ({ep.value}): {exc}") from exc
    return open_driver(name, factory, home, options, id_maps, runroot=runroot)


def open_driver(
    name: str,
    factory: DriverFactory,
    home: str | os.PathLike[str],
    options: Mapping[str, str] | None = None,
    id_maps: IDMappings | None = None,
    *,
    runroot: str | os.PathLike[str] | None = None,
) -> Driver:
    """Open a driver from its factory directly (for tests and drivers not installed as distributions)."""
    home_path = Path(home)
    opts = dict(options or {})
    maps = id_maps if id_maps is not None else IDMappings()
    declared = getattr(factory, "hook_api_version", hookspecs.HOOK_API_VERSION)
    if declared != hookspecs.HOOK_API_VERSION:
        raise InvalidDriver(
            f"driver {name!r} is written for hook API version {declared!r}, but this layerstore provides "
            f"version {hookspecs.HOOK_API_VERSION}; install a release of the driver made for this layerstore"
        )
    try:
        plugin = factory(home_path, opts, maps)
    except LayerStoreError:
        raise
    except (OSError, ValueError) as exc:
        raise DriverNotSupported(f"driver {name!r} cannot start on {home_path}: {exc}") from exc
    return Driver(name, plugin, home_path, maps, runroot=Path(runroot) if runroot is not None else None)
