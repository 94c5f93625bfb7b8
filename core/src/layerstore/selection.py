"""Driver selection: which driver opens a store (named, recorded, or the first supported), and opening it.

The rule is described in `layerstore.config` (the public module, which
re-exports this one and `layerstore.settings`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, DriverNotFound, DriverNotSupported, LayerStoreError
from .mountinfo import backing_filesystem

if TYPE_CHECKING:
    from .drivers import Driver
    from .graph import Graph
    from .settings import Settings

__all__ = [
    "AUTO_PRIORITY",
    "DRIVER_RECORD",
    "auto_candidates",
    "backing_filesystem",
    "open_driver_for",
    "open_store",
    "record_driver",
    "recorded_driver",
]

AUTO_PRIORITY: tuple[str, ...] = ("overlay", "vfs")
_FS_DRIVERS = {"btrfs": "btrfs", "zfs": "zfs", "fuse.zfs": "zfs"}
DRIVER_RECORD = ".driver"
"""The file under a store root that names the driver the store was created with."""


def recorded_driver(root: Path) -> str | None:
    """The driver the store at `root` was created with: its record, else the one driver home holding data."""
    try:
        name = (root / DRIVER_RECORD).read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        name = ""
    except OSError as exc:
        raise ConfigError(f"cannot read {root / DRIVER_RECORD}: {exc.strerror}") from None
    if name:
        return name
    # A store made before the record existed: a driver home with data in it tells.
    from .discovery import installed_driver_names

    homes = [d for d in installed_driver_names() if (root / d).is_dir() and any((root / d).iterdir())]
    return homes[0] if len(homes) == 1 else None


def record_driver(root: Path, name: str) -> None:
    """Record `name` as the driver of the store at `root`, unless a record exists (first writer wins).

    The record is written under a unique temporary name and linked into
    place, so concurrent first opens never see a partial record.  Failures
    (a full or read-only filesystem) are ignored: the record is written by a
    later open.
    """
    target = root / DRIVER_RECORD
    if target.exists():
        return
    tmp = root / f"{DRIVER_RECORD}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        tmp.write_text(name + "\n", encoding="utf-8")
        os.link(tmp, target)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def auto_candidates(root: Path, installed: Iterable[str]) -> list[str]:
    """The drivers automatic selection tries, in order, for a store at `root`."""
    fs_driver = _FS_DRIVERS.get(backing_filesystem(root))
    order = ([fs_driver] if fs_driver else []) + [d for d in AUTO_PRIORITY if d != fs_driver]
    installed_set = set(installed)
    # A store keeps the driver it was created with: a driver whose home holds data goes first.
    prior = [d for d in sorted(installed_set) if (root / d).is_dir() and any((root / d).iterdir())]
    return list(dict.fromkeys([*(d for d in order if d in prior), *prior, *order]))


def _load(name: str, settings: Settings) -> Driver:
    from .drivers import load_driver

    home = settings.root / name
    created = [p for p in (settings.root, home) if not p.exists()]
    try:
        return load_driver(name, home, settings.options_for(name), settings.id_maps, runroot=settings.runroot)
    except BaseException:
        # Do not leave empty directories behind for a driver that said no.
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                break
        raise


def open_driver_for(settings: Settings) -> Driver:
    """Open the driver the settings choose (automatic selection when no name is given).

    `DriverNotFound` / `DriverNotSupported` for a named driver; for automatic
    selection one `DriverNotSupported` listing each candidate's reason.
    """
    from .discovery import NO_DRIVER_INSTALLED, driver_entry_points

    installed = sorted(driver_entry_points())  # scanned once per process: `_load` asks again for free
    settings.check_driver_names(installed)
    recorded = recorded_driver(settings.root)
    if settings.driver is not None:
        if recorded is not None and recorded != settings.driver:
            raise ConfigError(
                f"the store at {settings.root} was created with driver {recorded}, not {settings.driver} "
                f"(from {settings.driver_source}): use driver {recorded}, or another --root"
            )
        return _load(settings.driver, settings)
    if recorded is not None:
        try:
            return _load(recorded, settings)
        except (DriverNotSupported, DriverNotFound) as exc:
            raise DriverNotSupported(
                f"the store at {settings.root} uses driver {recorded}, which cannot start: {exc}"
            ) from None
    if not installed:
        raise DriverNotFound(NO_DRIVER_INSTALLED)
    reasons = []
    for name in auto_candidates(settings.root, installed):
        if name not in installed:
            reasons.append(f"{name}: not installed")
            continue
        try:
            return _load(name, settings)
        except (DriverNotSupported, DriverNotFound) as exc:
            reasons.append(f"{name}: {exc}")
    raise DriverNotSupported(f"no storage driver can run on {settings.root}: " + "; ".join(reasons))


def open_store(settings: Settings) -> tuple[Driver, Graph]:
    """Open the driver and the image store of `settings`.  Call ``driver.cleanup()`` when done."""
    from .graph import Graph

    driver = open_driver_for(settings)
    try:
        graph = Graph(settings.root, driver, settings.config.uid_maps, settings.config.gid_maps)
        record_driver(settings.root, driver.name)
    except BaseException:
        try:
            driver.cleanup()
        except LayerStoreError:
            pass
        raise
    return driver, graph
