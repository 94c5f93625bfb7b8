"""Fixtures every test directory shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest


def _require_accel(function: Any, name: str) -> Any:
    if function is None:
        if os.environ.get("LAYERSTORE_REQUIRE_ACCEL"):
            pytest.fail(f"LAYERSTORE_REQUIRE_ACCEL is set but layerstore-accel (with {name}) is not installed")
        pytest.skip("layerstore-accel is not installed (make venv builds it; tox's integration environment has it)")
    return function


@pytest.fixture
def require_accel() -> Callable[[Any, str], Any]:
    """``require_accel(function, name)``: the native `function` of ``layerstore-accel``, or skip the test.

    Without the distribution (`function` is None) the test is skipped, and
    fails when ``LAYERSTORE_REQUIRE_ACCEL`` is set (tox's environments that
    install it, and CI).
    """
    return _require_accel
