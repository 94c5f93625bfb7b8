"""Frozen copies of a parent's diff/ are removed when no child needs them: disk use stays bounded."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from conftest import OpenOverlay

from layerstore import Graph


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _frozen(home: Path, layer: str) -> list[str]:
    return sorted(n for n in os.listdir(home / layer) if n.startswith("frozen-"))


def test_repeated_child_and_export_cycles_stay_bounded(open_overlay: OpenOverlay, store_root: Path) -> None:
    home = store_root / "overlay"
    driver = open_overlay(home)
    try:
        graph = Graph(store_root, driver)
        base = graph.create(io.BytesIO(_tar({"big": os.urandom(1_000_000)})))
        for cycle in range(6):
            child = graph.create(io.BytesIO(_tar({f"c{cycle}": b"x"})), parent=base.id)
            with graph.tar_layer(base) as stream:  # mounting the parent freezes its diff/ for the child
                stream.read()
            graph.delete(child.id)
            assert len(_frozen(home, base.id)) == 0, cycle  # the last child went: so did its frozen copy
        links = os.listdir(home / "l")
        assert len(links) == 1  # only the base's own short name is left
        graph.delete(base.id)
    finally:
        driver.cleanup()
