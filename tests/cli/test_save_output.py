"""`save -o`: like `export -o`, a regular file or new directory appears whole, a device or FIFO is written in place.

A killed save leaves nothing beside its output that the store does not remove.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from cli_helpers import Run, ok
from cli_helpers import temp_outputs as _temp_files


def _layers_in(archive: bytes) -> list[dict[str, object]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = tar.extractfile("manifest.json")
        assert manifest is not None
        return list(json.loads(manifest.read()))


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_a_fifo_is_written_in_place(run: Run, output_layer: str, tmp_path: Path, fmt: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    # A daemon: should the save replace the FIFO, the reader would wait for a writer for ever.
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    ok(run("save", output_layer, "-o", fifo, "--format", fmt))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "save replaced the FIFO"
    reader.join()
    with tarfile.open(fileobj=io.BytesIO(got[0])) as tar:
        assert ("manifest.json" if fmt == "docker-archive" else "index.json") in tar.getnames()
    assert _temp_files(tmp_path) == []


def test_a_proc_fd_name_is_written_in_place(run: Run, output_layer: str) -> None:
    proc = run("save", output_layer, "-o", "/proc/self/fd/1")
    assert proc.returncode == 0, proc.stderr
    assert len(_layers_in(proc.stdout)) == 1


_KILLED_SAVE = """
import io, os, signal, sys
from pathlib import Path
from layerstore.cli import _install_handlers
from layerstore.images.archives import open_destination
_install_handlers()
destination = open_destination(Path(sys.argv[1]), sys.argv[2], journal=Path(sys.argv[3]))
try:
    destination.put_blob(io.BytesIO(b"partial" * 1000), "application/octet-stream")
    os.kill(os.getpid(), getattr(signal, sys.argv[4]))
finally:
    destination.close()
"""


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-dir"])
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_removes_the_temporary_output(tmp_path: Path, fmt: str, signame: str) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, out, fmt, journal, signame], check=False,
                          capture_output=True)
    assert proc.returncode != 0
    assert not out.exists()
    assert _temp_files(tmp_path) == [] and os.listdir(journal) == []


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-dir"])
def test_the_leftover_of_a_killed_save_is_swept_by_the_store(run: Run, output_layer: str, tmp_path: Path,
                                                             cli_env: dict[str, str], fmt: str) -> None:
    journal = Path(cli_env["LAYERSTORE_ROOT"]) / "graph" / "_tmp"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, out, fmt, journal, "SIGKILL"], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert len(_temp_files(tmp_path)) == 1  # the kill left it
    ok(run("images"))  # any command on the store sweeps what dead processes recorded
    assert _temp_files(tmp_path) == [] and not out.exists()
    assert os.listdir(journal) == []
