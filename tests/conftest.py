"""Markers of the project's own tests (the root pyproject runs pytest with --strict-markers)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used under tests/."""
    config.addinivalue_line(
        "markers", "install: builds fresh virtualenvs and installs distributions with pip (slow, needs PyPI)"
    )
    config.addinivalue_line("markers", "integration: needs several drivers installed at once")
