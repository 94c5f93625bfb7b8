"""Functions run in separate processes (multiprocessing "spawn") by the concurrency tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from layerstore import load_driver
from layerstore.graph import Graph
from layerstore.image import Image


def layer_bytes(index: int, size: int = 300_000) -> bytes:
    """A deterministic layer tar, different for each index."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for n in range(5):
            data = (f"layer {index} file {n}\n".encode() * (size // 20))[: size // (n + 1)]
            info = tarfile.TarInfo(f"dir{index}/file{n}")
            info.size = len(data)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def register_same(root: str, image_id: str, barrier: Any) -> bool:
    """Open the store, wait for the other process, register `image_id`; True if this process did the work."""
    driver = load_driver("vfs", Path(root) / "vfs")
    try:
        graph = Graph(root, driver)
        barrier.wait()
        return graph.register(Image(id=image_id), io.BytesIO(layer_bytes(0, 2_000_000)))
    finally:
        driver.cleanup()


def import_one(args: tuple[str, int, Any]) -> str:
    """Create one image from layer `index` in the store at `root`; return its ID."""
    root, index, barrier = args
    driver = load_driver("vfs", Path(root) / "vfs")
    try:
        graph = Graph(root, driver)
        barrier.wait()
        return graph.create(io.BytesIO(layer_bytes(index)), comment=f"layer {index}").id
    finally:
        driver.cleanup()
