"""The shared conformance suite, run on a real zfs-fuse pool.

Each test gets its own dataset (`zfs_root`, a fresh ``<pool>/t<n>``) as the
suite's root; the driver finds its parent dataset from the mount of the home
below it, so tests never see each other's layers and no option is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore.conformance import DriverConformance


class TestZfsConformance(DriverConformance):
    """Every conformance test against the zfs driver."""

    driver_name = "zfs"

    @pytest.fixture
    def layerstore_root(self, zfs_root: Path) -> Path:
        """A directory on a fresh dataset of the session's zfs-fuse pool."""
        return zfs_root
