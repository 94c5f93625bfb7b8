"""Fixtures for the image store tests: a vfs-backed store in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from graph_helpers import open_vfs

from layerstore.drivers import Driver
from layerstore.graph import Graph


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def driver(store_root: Path) -> Iterator[Driver]:
    drv = open_vfs(store_root)
    yield drv
    drv.cleanup()


@pytest.fixture
def graph(store_root: Path, driver: Driver) -> Graph:
    return Graph(store_root, driver)
