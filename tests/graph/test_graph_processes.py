"""The store across real processes: concurrent registers, and a process killed mid-import."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import graph_workers
from graph_helpers import open_vfs

from layerstore.graph import Graph
from layerstore.image import generate_id

LAYERSTORE = str(Path(sys.executable).parent / "layerstore")


def test_two_processes_register_the_same_image(store_root: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    image_id = generate_id()
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            pending = [pool.apply_async(graph_workers.register_same, (str(store_root), image_id, barrier))
                       for _ in range(2)]
            results = sorted(p.get() for p in pending)
    assert results == [False, True]
    driver = open_vfs(store_root)
    try:
        graph = Graph(store_root, driver)
        assert list(graph.map()) == [image_id]
        assert [r.ok for r in graph.check()] == [True]
        assert os.listdir(store_root / "graph" / "_tmp") == []
    finally:
        driver.cleanup()


def test_eight_processes_import_different_layers(store_root: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            ids = pool.map(graph_workers.import_one, [(str(store_root), n, barrier) for n in range(8)])
    assert len(set(ids)) == 8
    driver = open_vfs(store_root)
    try:
        graph = Graph(store_root, driver)
        images = graph.map()
        assert set(images) == set(ids)
        assert sorted(img.comment for img in images.values()) == [f"layer {n}" for n in range(8)]
        results = list(graph.check())
        assert len(results) == 8 and all(r.ok for r in results), results
    finally:
        driver.cleanup()


def test_sigkill_mid_import_leaves_no_image_and_no_layer(store_root: Path) -> None:
    data = graph_workers.layer_bytes(1, 3_000_000)
    env = {**os.environ, "LAYERSTORE_ROOT": str(store_root), "LAYERSTORE_DRIVER": "vfs"}
    proc = subprocess.Popen([LAYERSTORE, "import", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])  # the rest never comes: the import is stuck mid-layer
    proc.stdin.flush()
    staging = store_root / "graph" / "_tmp"
    driver = open_vfs(store_root)
    try:
        image_id = None
        while image_id is None:  # wait until the child has a staging dir and a driver layer
            assert proc.poll() is None, proc.communicate()
            entries = [e for e in (os.listdir(staging) if staging.exists() else []) if ".new." in e]
            if entries and driver.exists(entries[0].split(".")[0]):
                image_id = entries[0].split(".")[0]
            else:
                time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        assert proc.returncode == -signal.SIGKILL
        # Before the store is opened again the leftovers are on disk, but the
        # facade does not show a layer whose apply_diff was cut short...
        assert (store_root / "vfs" / "dir" / image_id).is_dir()
        assert not driver.exists(image_id)
        # ...opening it sweeps the staging, nothing was ever visible, and gc removes the rest.
        graph = Graph(store_root, driver)
        assert not graph.exists(image_id)
        assert graph.map() == {}
        assert not driver.exists(image_id)
        assert os.listdir(staging) == []
        assert graph.gc().layers == ()
        assert not (store_root / "vfs" / "dir" / image_id).exists()
    finally:
        driver.cleanup()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_gc_removes_orphan_driver_layers(store_root: Path) -> None:
    driver = open_vfs(store_root)
    try:
        graph = Graph(store_root, driver)
        keep = graph.create(None)
        orphan, orphan_child = generate_id(), generate_id()
        driver.create(orphan, keep.id)
        driver.create(orphan_child, orphan)
        assert not graph.exists(orphan)
        report = graph.gc()
        assert sorted(report.layers) == sorted([orphan, orphan_child])
        assert not driver.exists(orphan) and not driver.exists(orphan_child)
        assert graph.exists(keep.id)
        assert graph.gc().layers == ()
    finally:
        driver.cleanup()
