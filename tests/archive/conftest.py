"""Fixtures of the archive tests; the helpers live in archive_helpers."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    """An empty layer directory with a sentinel directory beside it (must stay untouched)."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/keep").write_text("sentinel")
    dest = tmp_path / "layer"
    dest.mkdir()
    return dest
