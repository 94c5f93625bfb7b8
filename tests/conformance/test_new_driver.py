"""`layerstore new-driver`: the generated distribution installs and certifies green as generated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from layerstore.errors import ConfigError
from layerstore.newdriver import driver_files, write_driver

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "example-driver"
LAYERSTORE = Path(sys.executable).with_name("layerstore")


def _run(argv: list[str | Path], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    full_env.update(env)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env, check=False)


@pytest.mark.install
def test_generated_driver_installs_and_certifies(tmp_path: Path, ext4_root: Path) -> None:
    generated = _run([LAYERSTORE, "new-driver", "gendir", tmp_path / "dist"])
    assert generated.returncode == 0, generated.stderr
    site = tmp_path / "site"  # installed beside the environment, not into it
    installed = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
                      tmp_path / "dist"])  # fmt: skip
    if installed.returncode != 0 and "Could not find a version" in installed.stderr:
        pytest.skip(f"the package index is not reachable to build the driver: {installed.stderr.strip()[-200:]}")
    assert installed.returncode == 0, installed.stderr
    root = Path(tempfile.mkdtemp(dir=ext4_root))
    report = tmp_path / "report.json"
    result = _run([LAYERSTORE, "conformance", "gendir", "--root", root, "--report", report,
                   "--", "-p", "no:cacheprovider", "-q"], PYTHONPATH=str(site))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("certified: "), lines[-5:]
    data = json.loads(report.read_text())
    assert data["distribution"] == "layerstore-gendir" and data["certified"] is True
    outcomes = {t["id"].rpartition("::")[2]: t["outcome"] for t in data["tests"]}
    assert outcomes["test_killed_create_leaves_child_whole_or_absent"] == "passed"
    assert outcomes["test_killed_remove_leaves_layer_whole_or_absent"] == "passed"
    # The generated test module runs the same suite from the driver's own tests.
    own = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", tmp_path / "dist" / "tests",
                "--layerstore-root", root, "-k", "empty or exact_copy"], PYTHONPATH=str(site))  # fmt: skip
    assert own.returncode == 0, own.stdout[-3000:]
    assert list(root.iterdir()) == [], "the suite left driver homes behind"


def test_worked_example_is_what_new_driver_writes() -> None:
    """docs/example-driver, which the driver guide walks through, is exactly the generated code."""
    files = driver_files("copydir")
    on_disk = {
        str(p.relative_to(EXAMPLE)): p.read_text()
        for p in EXAMPLE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert on_disk == files, "regenerate it: layerstore new-driver copydir docs/example-driver (after rm -r)"


def test_bad_name_and_used_directory_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad driver name 'My-Driver'"):
        write_driver("My-Driver", tmp_path / "a")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        write_driver("mine", tmp_path / "used")
    assert sorted(os.listdir(tmp_path)) == ["used"]
    assert (tmp_path / "used" / "keep").read_text() == "mine"
    result = _run([LAYERSTORE, "new-driver", "mine", tmp_path / "used"])
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "is not empty" in result.stderr
    written = write_driver("mine", tmp_path / "empty-ok")
    assert (tmp_path / "empty-ok" / "pyproject.toml") in written
    assert 'mine = "layerstore_mine:MineDriver"' in (tmp_path / "empty-ok" / "pyproject.toml").read_text()
