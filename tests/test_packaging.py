"""Every distribution builds a wheel whose metadata passes the package index's checks, and installs cleanly.

Slow (builds wheels and virtualenvs with pip): marked ``install`` like tests/test_install.py.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {
    "layerstore": REPO / "core",
    "layerstore-vfs": REPO / "plugins" / "vfs",
    "layerstore-overlay": REPO / "plugins" / "overlay",
    "layerstore-btrfs": REPO / "plugins" / "btrfs",
    "layerstore-zfs": REPO / "plugins" / "zfs",
    "layerstore-accel": REPO / "accel",
}


def _run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(kwargs.pop("env", {}))  # type: ignore[arg-type]
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, check=False,
                            **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for source in DISTRIBUTIONS.values():
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source])
    found = {}
    for wheel in out.glob("*.whl"):
        found[wheel.name.split("-")[0].replace("_", "-")] = wheel
    assert set(found) == set(DISTRIBUTIONS), found
    return found


@pytest.fixture(scope="module")
def tools_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("tools") / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "twine", "check-wheel-contents"])
    return venv


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def test_wheels_pass_twine_check_and_check_wheel_contents(wheels: dict[str, Path], tools_venv: Path) -> None:
    paths = sorted(wheels.values())
    out = _run([tools_venv / "bin" / "twine", "check", "--strict", *paths]).stdout
    assert out.count("PASSED") == len(paths), out
    _run([tools_venv / "bin" / "check-wheel-contents", *paths])


def test_metadata_is_ready_to_publish(wheels: dict[str, Path]) -> None:
    import layerstore

    for name, wheel in wheels.items():
        meta = _metadata(wheel)
        with zipfile.ZipFile(wheel) as zf:
            assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist()), name
        assert meta["License-Expression"] == "Apache-2.0", name
        assert meta["Version"] == layerstore.__version__, name  # one version, read from the package
        assert meta.get_all("Classifier") and meta["Keywords"] and meta.get_all("Project-URL"), name
        body = meta.get_payload()
        assert isinstance(body, str) and len(body.splitlines()) > 10, name
        assert "](../" not in body and "](./" not in body, f"{name}: relative link in the long description"
        if name != "layerstore":
            assert "layerstore<0.2,>=0.1" in (meta.get_all("Requires-Dist") or []), name
    extras = _metadata(wheels["layerstore"]).get_all("Provides-Extra") or []
    assert {"xz", "conformance"} <= set(extras)


def test_core_and_one_plugin_work_with_and_without_python_xz(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python, layerstore = venv / "bin" / "python", venv / "bin" / "layerstore"
    _run([python, "-m", "pip", "install", "--quiet", wheels["layerstore"], wheels["layerstore-vfs"]])
    layer = tmp_path / "layer.tar"
    _run(["tar", "-C", REPO / "core", "-cf", layer, "README.md", "LICENSE"])
    _run(["xz", "-k", layer])
    env = {"LAYERSTORE_ROOT": str(tmp_path / "store"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for with_xz in (False, True):
        if with_xz:
            _run([python, "-m", "pip", "install", "--quiet", "python-xz"])
        decoder = _run([python, "-c", "from layerstore.archive.compression import xz_decoder; print(xz_decoder())"])
        assert decoder.stdout.strip() == ("python-xz" if with_xz else "lzma")
        image_id = _run([layerstore, "import", "-q", f"{layer}.xz"], env=env).stdout.strip()
        exported = tmp_path / f"out-{with_xz}.tar"
        _run([layerstore, "export", image_id, "-o", exported], env=env)
        assert exported.read_bytes() == layer.read_bytes()
        assert "vfs" in _run([layerstore, "drivers"], env=env).stdout
    hint = subprocess.run([layerstore, "conformance", "vfs"], capture_output=True, text=True, check=False,
                          env={**os.environ, **env})
    assert hint.returncode == 1 and "pip install 'layerstore[conformance]'" in hint.stderr, hint.stderr
