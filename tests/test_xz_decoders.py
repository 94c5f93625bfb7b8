"""`.xz` layers decode with python-xz when it is installed and with the standard library's lzma otherwise."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerstore.archive import compression
from layerstore.counting import CountingReader as _CountingReader


def _xz_layer(tmp_path: Path) -> tuple[bytes, Path]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for n in range(20):
            data = os.urandom(3000) * 3
            info = tarfile.TarInfo(f"f{n}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    path = tmp_path / "layer.tar.xz"
    path.write_bytes(subprocess.run(["xz", "-c"], input=raw, capture_output=True, check=True).stdout)
    return raw, path


@pytest.fixture(params=["python-xz", "lzma"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which decoder runs; records every python-xz open."""
    opened: list[str] = []
    if request.param == "lzma":
        monkeypatch.setattr(compression, "_python_xz", lambda: None)
    else:
        import xz  # a test dependency of core

        class Spy:
            @staticmethod
            def open(stream: Any, mode: str) -> Any:
                opened.append(mode)
                return xz.open(stream, mode)

        monkeypatch.setattr(compression, "_python_xz", lambda: Spy)
    opened.insert(0, request.param)
    return opened


def test_file_input_uses_the_installed_decoder(decoder: list[str], tmp_path: Path) -> None:
    raw, path = _xz_layer(tmp_path)
    # As the CLI reads it: through the progress counter, which keeps the file seekable.
    with open(path, "rb") as f, compression.decompressed(_CountingReader(f, lambda n: None)) as plain:  # type: ignore[arg-type]
        assert hashlib.sha256(plain.read()).digest() == hashlib.sha256(raw).digest()
    assert decoder[1:] == (["rb"] if decoder[0] == "python-xz" else [])


def test_pipe_input_uses_lzma(decoder: list[str], tmp_path: Path) -> None:
    raw, path = _xz_layer(tmp_path)
    with subprocess.Popen(["cat", path], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with compression.decompressed(proc.stdout) as plain:  # type: ignore[arg-type]
            assert plain.read() == raw
    assert decoder[1:] == []


def test_cli_imports_xz_without_python_xz(tmp_path: Path) -> None:
    raw, path = _xz_layer(tmp_path)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "xz.py").write_text("raise ImportError('python-xz hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hide), "LAYERSTORE_ROOT": str(tmp_path / "store"),
           "LAYERSTORE_DRIVER": "vfs", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("LAYERSTORE_CONFIG", None)
    layerstore = str(Path(sys.executable).parent / "layerstore")
    probe = subprocess.run([sys.executable, "-c", "from layerstore.archive.compression import xz_decoder; "
                            "print(xz_decoder())"], env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "lzma"
    image_id = subprocess.run([layerstore, "import", "-q", path], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    exported = subprocess.run([layerstore, "export", image_id], env=env, capture_output=True, check=True).stdout
    assert exported == raw
