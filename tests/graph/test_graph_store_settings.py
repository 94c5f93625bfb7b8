"""What a store keeps about itself: its ID maps, per-layer options, and lock files only while images live."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from graph_helpers import make_tar, open_vfs

from layerstore.drivers import Driver
from layerstore.errors import ConfigError, IDMapMismatch
from layerstore.graph import Graph
from layerstore.idtools import IDMap
from layerstore.image import generate_id


def test_store_records_its_id_maps_and_refuses_others(store_root: Path, driver: Driver) -> None:
    Graph(store_root, driver)  # created with the identity mapping
    assert (store_root / "graph" / "idmaps").read_text() == "uids none\ngids none\n"
    Graph(store_root, driver)  # same maps: fine
    with pytest.raises(IDMapMismatch) as info:
        Graph(store_root, driver, [IDMap(0, 100000, 65536)], [IDMap(0, 100000, 65536)])
    message = str(info.value)
    assert "uids none" in message and "uids 0:100000:65536" in message and "gids 0:100000:65536" in message
    assert str(store_root) in message and "\n" not in message


def test_cli_names_both_maps(tmp_path: Path) -> None:
    import subprocess
    import sys

    layerstore = str(Path(sys.executable).parent / "layerstore")
    env = {**os.environ, "LAYERSTORE_ROOT": str(tmp_path / "s"), "LAYERSTORE_DRIVER": "vfs",
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("LAYERSTORE_CONFIG", None)
    layer = tmp_path / "a.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    subprocess.run([layerstore, "import", layer], env=env, check=True, capture_output=True)
    config = tmp_path / "maps.toml"
    config.write_text('uid_maps = "0:100000:65536"\ngid_maps = "0:100000:65536"\n')
    proc = subprocess.run([layerstore, "--config", config, "check"], env=env, capture_output=True, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and "uids none" in err and "0:100000:65536" in err, err


def test_storage_opts_reach_the_driver(graph: Graph) -> None:
    # vfs has no per-layer options: the refusal names the option and nothing is stored.
    with pytest.raises(ConfigError, match="size"):
        graph.create(io.BytesIO(make_tar({"a": b"a"})), storage_opts={"size": "10M"})
    assert graph.ids() == []
    assert not any(p for p in (graph.root / "graph" / "_tmp").iterdir())


def test_lock_files_go_with_their_images(graph: Graph) -> None:
    locks = graph.root / "graph" / "_locks"
    images = [graph.create(io.BytesIO(make_tar({"a": b"a"}))) for _ in range(5)]
    for image in images:
        graph.delete(image.id)
    assert sorted(os.listdir(locks)) == []


def test_gc_sweeps_stale_lock_files(graph: Graph) -> None:
    locks = graph.root / "graph" / "_locks"
    kept = graph.create(io.BytesIO(make_tar({"a": b"a"})))
    stale = [generate_id() for _ in range(3)]
    for name in stale:  # as left by killed processes or by older versions
        (locks / name).touch()
    report = graph.gc()
    assert sorted(report.locks) == sorted(stale)
    assert not any((locks / name).exists() for name in stale)
    assert graph.ids() == [kept.id]


def test_lock_taken_on_a_removed_file_is_retaken(store_root: Path, driver: Driver) -> None:
    """A process that opened a lock file which another then unlinked must not think it holds the lock."""
    graph = Graph(store_root, driver)
    other = Graph(store_root, open_vfs(store_root))
    image = graph.create(io.BytesIO(make_tar({"a": b"a"})))
    with graph._locked(image.id):
        (store_root / "graph" / "_locks" / image.id).unlink()  # as delete does at its end
        with other._locked(image.id, blocking=False) as got:
            assert got  # a fresh file, a fresh lock: the unlinked one protects nothing any more
    other.driver.cleanup()
