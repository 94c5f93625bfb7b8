"""Deep chains of layers and the driver's declared depth limit (docs/driver-guide.md)."""

from __future__ import annotations

import io
import os

import pytest

from layerstore.change import Change, ChangeKind
from layerstore.drivers import Driver
from layerstore.errors import LimitExceeded

from ._support import MTIME, new_id
from ._tars import TarBuilder

CHAIN_DEPTH = 120
"""Layers in the deep-chain test (fewer when the driver declares a smaller maximum depth)."""


def _level_tar(level: int, depth: int) -> bytes:
    tar = TarBuilder().file("level", f"{level}\n".encode(), mtime=MTIME + level)
    if level == depth // 2:
        tar.file("middle", b"from the middle\n")
    if level == 10:
        tar.file("doomed", b"deleted one layer up\n")
    if level == 11:
        tar.whiteout("doomed")
    return tar.bytes()


class ChainTests:
    """Reading through many layers."""

    def test_deep_chain(self, driver: Driver) -> None:
        depth = CHAIN_DEPTH if driver.max_depth is None else min(CHAIN_DEPTH, driver.max_depth)
        base = new_id()
        driver.create(base)
        driver.apply_diff(base, None, io.BytesIO(TarBuilder().file("bottom", b"from the bottom\n").bytes()))
        layers = [base]
        for level in range(1, depth):
            layer = new_id()
            driver.create(layer, layers[-1])
            driver.apply_diff(layer, layers[-1], io.BytesIO(_level_tar(level, depth)))
            layers.append(layer)
        top = layers[-1]
        with driver.mounted(top) as path:
            with open(os.path.join(path, "bottom"), "rb") as f:
                assert f.read() == b"from the bottom\n"
            with open(os.path.join(path, "level"), "rb") as f:
                assert f.read() == f"{depth - 1}\n".encode()
            expected = {"bottom", "level", "middle"} if depth > 11 else None
            if expected is not None:
                assert set(os.listdir(path)) == expected
        expected_changes = [Change("/level", ChangeKind.MODIFY)]
        if depth - 1 == depth // 2:
            expected_changes.append(Change("/middle", ChangeKind.ADD))
        assert driver.changes(top, layers[-2]) == expected_changes
        with driver.mounted(base) as path:
            assert os.listdir(path) == ["bottom"], "a deep chain changed its bottom layer"

    @pytest.mark.layerstore_requires("max-depth")
    def test_depth_limit(self, driver: Driver) -> None:
        limit = driver.max_depth
        assert limit is not None
        layers: list[str] = []
        for _ in range(limit):
            layer = new_id()
            driver.create(layer, layers[-1] if layers else None)
            layers.append(layer)
        with driver.mounted(layers[-1]) as path:
            assert os.path.isdir(path), f"the layer at the maximum depth {limit} cannot be mounted"
        past = new_id()
        with pytest.raises(LimitExceeded) as info:
            driver.create(past, layers[-1])
        assert str(limit) in str(info.value), f"the error does not name the limit {limit}: {info.value}"
        assert not driver.exists(past)
