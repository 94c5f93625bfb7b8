"""Helpers for tests of layerstore and of third-party drivers.

`unavailable` decides what happens when a backend cannot run here: a skip
with the reason on a developer machine, a failure where ``CI=true`` or
``LAYERSTORE_REQUIRE_DRIVERS`` asks for the driver (``all`` or a
comma-separated list of names), so that CI never skips a driver silently.
Backend fixtures (loop-mounted filesystems, zfs-fuse pools) live in the
submodules.
"""

from __future__ import annotations

import os
from typing import NoReturn

__all__ = ["driver_required", "unavailable"]


def driver_required(name: str) -> bool:
    """True when this run must not skip driver `name` (CI, or LAYERSTORE_REQUIRE_DRIVERS)."""
    wanted = os.environ.get("LAYERSTORE_REQUIRE_DRIVERS", "").strip()
    if wanted:
        names = {n.strip() for n in wanted.split(",")}
        return "all" in names or name in names
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(name: str, reason: str) -> NoReturn:
    """Skip the current test because backend `name` cannot run (`reason`), or fail where it is required."""
    import pytest

    if driver_required(name):
        pytest.fail(f"driver {name} is required here (CI or LAYERSTORE_REQUIRE_DRIVERS) but cannot run: {reason}")
    pytest.skip(f"driver {name} cannot run here: {reason}")
