"""A check that drivers with per-layer quotas share: ``layerstore import --storage-opt size=...`` end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

__all__ = ["check_import_quota"]


def _layer(directory: Path, name: str, mib: int) -> Path:
    """A layer tar holding one file of `mib` MiB of random (incompressible) data."""
    path = directory / name
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("data")
        info.size = mib << 20
        tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    return path


def check_import_quota(driver_name: str, root: Path, scratch: Path) -> None:
    """Run the ``layerstore`` command of this interpreter against a store at `root` on the driver's backend.

    A 2 MiB layer imports under ``size=10M`` and gets the quota; a 20 MiB one
    is refused with one error line and leaves nothing (not even for ``gc``);
    the same layer imports without the option (the quota is per layer).
    `scratch` holds the layer tars.  Raises AssertionError on any deviation.
    """
    from layerstore import load_driver

    layerstore = str(Path(sys.executable).parent / "layerstore")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "STORAGE_"))}
    env["XDG_CONFIG_HOME"] = str(scratch / "no-config")

    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([layerstore, "--root", str(root), "--driver", driver_name, *map(str, args)],
                              capture_output=True, text=True, env=env, check=False)

    small, big = _layer(scratch, "small.tar", 2), _layer(scratch, "big.tar", 20)
    kept = cli("import", "-q", "--storage-opt", "size=10M", small)
    assert kept.returncode == 0, kept.stderr
    image_id = kept.stdout.strip()
    driver = load_driver(driver_name, root / driver_name)
    try:
        assert driver.metadata(image_id)["quota"] == str(10 << 20)
    finally:
        driver.cleanup()

    refused = cli("import", "--storage-opt", "size=10M", big)
    lines = refused.stderr.splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert lines[0].startswith("layerstore: error: ") and ("space" in lines[0] or "quota" in lines[0]), lines
    assert cli("ls", "-q").stdout.split() == [image_id], "something of the refused import remains"
    assert json.loads(cli("gc", "--json").stdout)["removed_layers"] == []
    without = cli("import", "-q", big)
    assert without.returncode == 0, without.stderr
    for image in cli("ls", "-q").stdout.split():
        assert cli("rm", "-q", image).returncode == 0
