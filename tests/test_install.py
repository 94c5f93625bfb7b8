"""Installation as users do it: core alone in a fresh virtualenv, then drivers as separate distributions.

These tests build virtualenvs and install with pip (from PyPI and the
repository), so they are slow; select or deselect them with ``-m install``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layerstore.testing.loop import LARGE_XATTRS, loop_filesystem_or_unavailable

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(result.args)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _pip_install(venv: Path, *requirements: str | Path) -> None:
    result = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", *requirements])
    if result.returncode != 0 and any(
        s in result.stderr for s in ("Could not find a version", "NewConnectionError", "Temporary failure")
    ):
        pytest.skip(f"PyPI is not reachable to install {requirements}: {result.stderr.strip().splitlines()[-1]}")
    _ok(result)


def _core_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv]))
    _pip_install(venv, REPO / "core")
    return venv


def test_drivers_are_separate_distributions(tmp_path: Path) -> None:
    venv = _core_venv(tmp_path)
    python, layerstore = venv / "bin" / "python", venv / "bin" / "layerstore"
    store = tmp_path / "store"

    listed = _ok(_run([python, "-c", "import layerstore; print(layerstore.available_drivers())"]))
    assert listed.strip() == "{}", "core alone already provides a driver"
    # The CLI (layerstore.cli, `drivers` command) says that none is installed and how to add one.
    out = _ok(_run([layerstore, "--root", store, "drivers"]))
    assert "no storage driver is installed" in out and "pip install layerstore-vfs" in out, out

    _pip_install(venv, REPO / "plugins" / "vfs")
    listed = _ok(_run([python, "-c", "import layerstore; print(layerstore.available_drivers())"]))
    assert listed.strip() == "{'vfs': 'layerstore-vfs'}"
    out = _ok(_run([layerstore, "--root", store, "drivers"]))
    assert "vfs" in out and "layerstore-vfs" in out and "supported" in out, out


THIRD_PARTY_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.20"]
build-backend = "hatchling.build"

[project]
name = "thirdparty-layerstore-driver"
version = "1.0"
requires-python = ">=3.11"
dependencies = ["layerstore"]

[project.entry-points."layerstore.drivers"]
thirdparty = "thirdparty_driver:CopyDriver"

[tool.hatch.build.targets.wheel]
packages = ["src/thirdparty_driver"]
"""

# A driver written the way a third party would: directories copied with `cp -a`.
THIRD_PARTY_MODULE = '''\
"""A directory driver by a third party: each layer is a `cp -a` copy of its parent."""

import os
import shutil
import subprocess
from pathlib import Path

from layerstore import Capabilities, hookimpl
from layerstore.errors import ConfigError, LayerExists, LayerInUse, LayerNotFound


class CopyDriver:
    def __init__(self, home, options, id_maps):
        if options:
            raise ConfigError(f"unknown options for thirdparty: {sorted(options)}")
        self.layers = Path(home) / "layers"
        self.layers.mkdir(parents=True, exist_ok=True)
        self.id_maps = id_maps

    def _dir(self, id):
        return self.layers / id

    @hookimpl
    def create(self, id, parent, opts):
        if opts.storage_opts:
            raise ConfigError(f"unknown storage options {sorted(opts.storage_opts)} for layer {id}")
        if self._dir(id).exists():
            raise LayerExists(id)
        tmp = self.layers / f".new-{id}"
        shutil.rmtree(tmp, ignore_errors=True)
        if parent is None:
            tmp.mkdir()
            os.chmod(tmp, 0o755)
            os.chown(tmp, *self.id_maps.root_pair)
        else:
            subprocess.run(["cp", "-a", "--", str(self._dir(parent)), str(tmp)], check=True)
        (tmp.parent / f".parent-{id}").write_text(parent or "")
        os.rename(tmp, self._dir(id))

    @hookimpl
    def remove(self, id):
        if not self._dir(id).exists():
            raise LayerNotFound(id)
        for mark in self.layers.glob(".parent-*"):
            if mark.read_text() == id:
                raise LayerInUse(f"layer {id} has a child")
        shutil.rmtree(self._dir(id))
        (self.layers / f".parent-{id}").unlink()

    @hookimpl
    def get(self, id, mount_label):
        if not self._dir(id).exists():
            raise LayerNotFound(id)
        return str(self._dir(id))

    @hookimpl
    def put(self, id):
        pass

    @hookimpl
    def exists(self, id):
        return self._dir(id).is_dir()

    @hookimpl
    def capabilities(self):
        return Capabilities()
'''


def test_third_party_driver_runs_the_conformance_suite(tmp_path: Path) -> None:
    dist = tmp_path / "thirdparty"
    (dist / "src" / "thirdparty_driver").mkdir(parents=True)
    (dist / "pyproject.toml").write_text(THIRD_PARTY_PYPROJECT)
    (dist / "src" / "thirdparty_driver" / "__init__.py").write_text(textwrap.dedent(THIRD_PARTY_MODULE))
    venv = _core_venv(tmp_path)
    _pip_install(venv, "pytest>=8", dist)

    work = tmp_path / "work"  # no pytest configuration above it but /tmp's
    work.mkdir()
    # On an ext4 that holds 64 KiB xattrs: the root filesystem cannot, and certification refuses such skips.
    with loop_filesystem_or_unavailable("vfs", tmp_path / "loop", "ext4", 256, LARGE_XATTRS["ext4"]) as mnt:
        result = _run(
            # Not the crash tests: they create tens of thousands of files (test_new_driver
            # certifies a driver with them).
            [venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
             "--pyargs", "layerstore.conformance", "--layerstore-driver", "thirdparty", "-k", "not killed",
             "--layerstore-root", mnt],
            cwd=work,
        )  # fmt: skip
    out = result.stdout
    assert "site-packages/layerstore/conformance" in out, "the suite did not come from the installed core"
    assert "driver 'thirdparty' does not declare capability 'native-diff'" in out, out
    assert "no driver selected" not in out
    passed = re.search(r"(\d+) passed", out)
    assert passed is not None and int(passed.group(1)) >= 40, out
    assert result.returncode == 0, out
