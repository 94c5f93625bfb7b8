"""The shared driver conformance suite, run against the overlay driver on a loop-mounted ext4."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore.conformance import DriverConformance


class TestOverlayConformance(DriverConformance):
    """Every conformance test against real kernel overlay mounts."""

    driver_name = "overlay"

    @pytest.fixture
    def layerstore_root(self, store_root: Path) -> Path:
        """Driver homes live on the session's loop-mounted ext4; leaked mounts fail the test."""
        return store_root
