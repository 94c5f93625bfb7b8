"""Removal rules: missing, mounted, parent of a child, children first (docs/driver-guide.md)."""

from __future__ import annotations

import os

import pytest

from layerstore.drivers import Driver
from layerstore.errors import LayerInUse, LayerNotFound

from ._support import build_layer, new_id
from ._tars import TarBuilder


class RemovalTests:
    """Removing layers."""

    def test_remove_missing_raises_layer_not_found(self, driver: Driver) -> None:
        with pytest.raises(LayerNotFound):
            driver.remove(new_id())

    def test_parent_of_a_child_cannot_be_removed(self, driver: Driver) -> None:
        parent = build_layer(driver, tar=TarBuilder().file("f", b"parent\n").bytes())
        child = build_layer(driver, parent)
        grandchild = build_layer(driver, child)
        for layer in (parent, child):
            with pytest.raises(LayerInUse):
                driver.remove(layer)
            assert driver.exists(layer)
        with driver.mounted(grandchild) as path, open(os.path.join(path, "f"), "rb") as f:
            assert f.read() == b"parent\n", "a refused removal damaged the chain"
        driver.remove(grandchild)
        driver.remove(child)
        driver.remove(parent)
        left = [layer for layer in (parent, child, grandchild) if driver.exists(layer)]
        assert not left, f"remove returned, but layers still exist: {left}"

    def test_mounted_layer_cannot_be_removed(self, driver: Driver) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("f", b"busy\n").bytes())
        path = driver.get(layer)
        with pytest.raises(LayerInUse):
            driver.remove(layer)
        assert driver.exists(layer)
        with open(os.path.join(path, "f"), "rb") as f:
            assert f.read() == b"busy\n"
        driver.put(layer)
        driver.remove(layer)  # never "busy" after the last put
        assert not driver.exists(layer), f"remove returned, but layer {layer} still exists"
        with pytest.raises(LayerNotFound):
            driver.get(layer)

    def test_removed_id_can_be_created_again(self, driver: Driver) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("old", b"old\n").bytes())
        driver.remove(layer)
        driver.create(layer)
        with driver.mounted(layer) as path:
            assert os.listdir(path) == [], "a re-created layer shows the removed layer's files"

    def test_sibling_removal_leaves_parent_and_sibling(self, driver: Driver) -> None:
        parent = build_layer(driver, tar=TarBuilder().file("f", b"parent\n").bytes())
        first = build_layer(driver, parent)
        second = build_layer(driver, parent)
        driver.remove(first)
        with pytest.raises(LayerInUse):
            driver.remove(parent)
        with driver.mounted(second) as path:
            assert os.listdir(path) == ["f"]
        driver.remove(second)
        driver.remove(parent)
        assert not driver.exists(parent)
