"""`layerstore import --storage-opt size=...` on zfs: a dataset quota the layer cannot grow past."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import load_driver

LAYERSTORE = str(Path(sys.executable).parent / "layerstore")
DRIVER = "zfs"


@pytest.fixture
def store_root(zfs_root: Path) -> Iterator[Path]:
    yield zfs_root / "store"
    subprocess.run([LAYERSTORE, "--root", str(zfs_root / "store"), "--driver", DRIVER, "gc"],
                   capture_output=True, check=False)


def _layer(tmp_path: Path, name: str, mib: int) -> Path:
    """A layer tar holding one file of `mib` MiB of random (incompressible) data."""
    path = tmp_path / name
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("data")
        info.size = mib << 20
        tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    return path


def _cli(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "STORAGE_"))}
    env["XDG_CONFIG_HOME"] = str(root.parent / "no-config")
    return subprocess.run([LAYERSTORE, "--root", str(root), "--driver", DRIVER, *map(str, args)],
                          capture_output=True, text=True, env=env, check=False)


def test_import_storage_opt_size_is_a_quota(store_root: Path, tmp_path: Path) -> None:
    small, big = _layer(tmp_path, "small.tar", 2), _layer(tmp_path, "big.tar", 20)
    kept = _cli(store_root, "import", "-q", "--storage-opt", "size=10M", small)
    assert kept.returncode == 0, kept.stderr
    image_id = kept.stdout.strip()
    driver = load_driver(DRIVER, store_root / DRIVER)
    try:
        assert driver.metadata(image_id)["quota"] == str(10 << 20)
    finally:
        driver.cleanup()

    refused = _cli(store_root, "import", "--storage-opt", "size=10M", big)
    lines = refused.stderr.splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert lines[0].startswith("layerstore: error: ") and ("space" in lines[0] or "quota" in lines[0]), lines
    assert _cli(store_root, "ls", "-q").stdout.split() == [image_id]  # nothing of the refused import remains
    assert json.loads(_cli(store_root, "gc", "--json").stdout)["removed_layers"] == []
    without = _cli(store_root, "import", "-q", big)  # the quota is per layer, not per store
    assert without.returncode == 0, without.stderr
