"""The shared driver conformance suite, run against the btrfs driver on a loop-mounted btrfs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from layerstore.conformance import DriverConformance


class TestBtrfsConformance(DriverConformance):
    """Every conformance test against real btrfs subvolumes and snapshots."""

    driver_name = "btrfs"

    @pytest.fixture
    def layerstore_root(self, btrfs_mount: Path) -> Path:
        """A fresh directory on the session's loop-mounted btrfs; each test's driver home goes below it."""
        base = btrfs_mount / "conformance"
        base.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(dir=base))
