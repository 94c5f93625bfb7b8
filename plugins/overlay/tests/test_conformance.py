"""The shared driver conformance suite, run against the overlay driver on a loop-mounted ext4."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore import Driver
from layerstore.conformance import DriverConformance


class TestOverlayConformance(DriverConformance):
    """Every conformance test against real kernel overlay mounts."""

    driver_name = "overlay"

    @pytest.fixture
    def layerstore_root(self, store_root: Path) -> Path:
        """Driver homes live on the session's loop-mounted ext4; leaked mounts fail the test."""
        return store_root

    @pytest.mark.layerstore_requires("native-diff")
    @pytest.mark.xfail(
        strict=True,
        reason="the suite wants the native tar member-for-member equal to the naive export, which writes "
        "one .wh.<name> per hidden child of a recreated directory; overlay exports the directory's "
        "opaque marker .wh..wh..opq (DESIGN §4, §8.11: an opaque marker when it really hides lower "
        "contents). Both apply to the same tree; every other member is equal.",
    )
    def test_native_diff_matches_naive_comparison(self, driver: Driver) -> None:
        """As in the suite (see the xfail reason)."""
        super().test_native_diff_matches_naive_comparison(driver)
