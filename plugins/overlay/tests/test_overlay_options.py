"""Mount options that would send an overlay's writes outside the store are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import OpenOverlay

from layerstore.errors import ConfigError


@pytest.mark.parametrize("option", ["upperdir=/elsewhere", "lowerdir=/a:/b", "workdir=/w", "volatile,upperdir=/x"])
def test_mountopt_naming_directories_is_refused(open_overlay: OpenOverlay, store_root: Path, option: str) -> None:
    with pytest.raises(ConfigError, match="must not name directories"):
        open_overlay(store_root / "overlay", {"mountopt": option})
