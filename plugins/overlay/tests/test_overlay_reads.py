"""Exports read a layer's own files from diff/: no mount, no unmount, no frozen copy of a parent."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OpenOverlay, layer_tar

from layerstore import Driver, Graph
from layerstore.errors import LayerInUse
from layerstore.testing.loop import mounts_under


@pytest.fixture
def overlay_graph(open_overlay: OpenOverlay, store_root: Path) -> Iterator[tuple[Path, Driver, Graph]]:
    """The driver's home, an overlay driver there and an image store on it; cleaned up afterwards."""
    home = store_root / "overlay"
    driver = open_overlay(home)
    try:
        yield home, driver, Graph(store_root, driver)
    finally:
        driver.cleanup()


def _frozen(home: Path, layer: str) -> list[str]:
    return sorted(n for n in os.listdir(home / layer) if n.startswith("frozen-"))


def _sha(graph: Graph, layer: str) -> str:
    with graph.tar_layer(layer) as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def test_exports_mount_nothing_and_copy_no_parent(
    overlay_graph: tuple[Path, Driver, Graph], store_root: Path
) -> None:
    home, driver, graph = overlay_graph
    base_tar = layer_tar({"usr/lib/libc.so": b"libc\n" * 1000, "etc/passwd": b"root\n"})
    base = graph.create(io.BytesIO(base_tar))
    child_tar = layer_tar({"etc/hostname": b"box\n", "usr/lib/libc.so": b"patched\n"})
    child = graph.create(io.BytesIO(child_tar), parent=base.id)
    grandchild_tar = layer_tar({"srv/data": os.urandom(200_000)})
    grandchild = graph.create(io.BytesIO(grandchild_tar), parent=child.id)

    with graph.tar_layer(grandchild) as stream:
        first = stream.read(512)
        assert mounts_under(store_root) == [], "reading a layer mounted it"
        with pytest.raises(LayerInUse, match="1 reference"):  # the read holds a reference, as a mount would
            driver.remove(grandchild.id)
        rest = stream.read()
    assert hashlib.sha256(first + rest).hexdigest() == hashlib.sha256(grandchild_tar).hexdigest()
    assert driver.references(grandchild.id) == 0, "closing the export did not release its reference"

    for layer, raw in ((base, base_tar), (child, child_tar), (grandchild, grandchild_tar)):
        assert _sha(graph, layer.id) == hashlib.sha256(raw).hexdigest(), f"{layer.id} does not export exactly"
    assert [result.ok for result in graph.check()] == [True, True, True]
    # Parents with children were read: none was copied to keep its children's view.
    assert _frozen(home, base.id) == [] and _frozen(home, child.id) == []
    assert mounts_under(store_root) == []


def test_a_file_written_through_a_lower_link_is_read_from_the_mount(
    overlay_graph: tuple[Path, Driver, Graph], store_root: Path
) -> None:
    """`lib` is a link in the parent: the child's ``lib/new`` lives in diff/usr/lib, found through the mount."""
    home, driver, graph = overlay_graph
    base = graph.create(io.BytesIO(layer_tar({"usr/lib/libc.so": b"libc\n", "lib": "usr/lib"})))
    child_tar = layer_tar({"etc/own": b"own\n", "lib/new": b"through the parent's link\n"})
    child = graph.create(io.BytesIO(child_tar), parent=base.id)
    assert (home / child.id / "diff" / "usr" / "lib" / "new").is_file()
    assert not (home / child.id / "diff" / "lib").exists()

    with graph.tar_layer(child) as stream:
        data = stream.read()
        assert mounts_under(store_root) == [str(home / child.id / "merged")], "the fallback did not mount"
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(child_tar).hexdigest()
    assert mounts_under(store_root) == [], "closing the export left the fallback mount"
    assert driver.references(child.id) == 0


def test_a_changed_own_file_is_still_reported(
    overlay_graph: tuple[Path, Driver, Graph], store_root: Path
) -> None:
    home, _driver, graph = overlay_graph
    base = graph.create(io.BytesIO(layer_tar({"a": b"a\n"})))
    child = graph.create(io.BytesIO(layer_tar({"b": b"b\n"})), parent=base.id)
    (home / child.id / "diff" / "b").write_bytes(b"B\n")
    results = {result.id: result for result in graph.check()}
    assert results[base.id].ok
    assert not results[child.id].ok and "b" in results[child.id].message
    os.unlink(home / child.id / "diff" / "b")
    results = {result.id: result for result in graph.check()}
    assert not results[child.id].ok and "missing" in results[child.id].message
    assert mounts_under(store_root) == []
