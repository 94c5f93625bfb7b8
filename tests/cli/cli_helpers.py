"""Helpers of the command-line tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

LAYERSTORE = str(Path(sys.executable).parent / "layerstore")

Run = Callable[..., subprocess.CompletedProcess[bytes]]


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], *expected: str) -> str:
    """The failure contract of every command: non-zero exit, exactly one line on stderr, no traceback."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerstore: error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def make_tar(members: dict[str, bytes | None], *, trailing: bytes = b"") -> bytes:
    """A small tar of files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue() + trailing


def fake_driver_site(site: Path, name: str, module: str, source: str, factory: str) -> dict[str, str]:
    """Install driver `name` as distribution ``layerstore-<name>`` under `site`; the environment to find it."""
    dist = site / f"layerstore_{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: layerstore-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[layerstore.drivers]\n{name} = {module}:{factory}\n")
    (site / f"{module}.py").write_text(source)
    return {"PYTHONPATH": str(site)}


OUTPUT_LAYER = make_tar({"etc": None, "etc/hosts": b"127.0.0.1 localhost\n", "big": os.urandom(300_000)})
"""The layer the output tests (`export -o`, `save -o`) import and write out."""


def temp_outputs(directory: Path) -> list[str]:
    """Names in `directory` of temporary outputs (``.NAME.layerstore-<random>.tmp``)."""
    return [n for n in os.listdir(directory) if ".layerstore-" in n]
