"""`export -o FILE`: regular files replaced atomically, anything else written in place, symlinks written through."""

from __future__ import annotations

import hashlib
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
from cli_helpers import OUTPUT_LAYER as LAYER
from cli_helpers import Run, assert_one_line_error, ok
from cli_helpers import temp_outputs as _temp_files


@pytest.mark.parametrize("command", ["export", "save"])
def test_regular_file_is_replaced_atomically_keeping_its_mode(run: Run, output_layer: str, tmp_path: Path,
                                                              command: str) -> None:
    out = tmp_path / "out.tar"
    out.write_bytes(b"old content")
    out.chmod(0o640)
    before = os.stat(out).st_ino
    ok(run(command, output_layer, "-o", out))
    if command == "export":
        assert out.read_bytes() == LAYER
    else:  # a docker-archive of the one layer
        with tarfile.open(out) as tar:
            manifest = tar.extractfile("manifest.json")
            assert manifest is not None and len(json.load(manifest)[0]["Layers"]) == 1
    st = os.stat(out)
    assert st.st_ino != before  # a new file was renamed into place
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("command", ["export", "save"])
def test_character_device_is_written_not_replaced(run: Run, output_layer: str, tmp_path: Path, command: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    ok(run(command, output_layer, "-o", null))
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), f"{command} replaced the device node"
    assert _temp_files(tmp_path) == []


def test_full_device_reports_no_space_naming_it(run: Run, output_layer: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    line = assert_one_line_error(run("export", output_layer, "-o", full), "no space left")
    assert str(full) in line
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_fifo_is_written_in_place(run: Run, output_layer: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    ok(run("export", output_layer, "-o", fifo))
    reader.join()
    assert got == [LAYER]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_is_written_through(run: Run, output_layer: str, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "real.tar"
    target.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    ok(run("export", output_layer, "-o", link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == LAYER
    dangling = tmp_path / "dangling.tar"
    dangling.symlink_to(tmp_path / "elsewhere" / "new.tar")
    ok(run("export", output_layer, "-o", dangling))
    assert dangling.is_symlink() and (tmp_path / "elsewhere" / "new.tar").read_bytes() == LAYER


def test_proc_fd_name_is_written_in_place(run: Run, output_layer: str, tmp_path: Path) -> None:
    proc = run("export", output_layer, "-o", "/proc/self/fd/1")
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(LAYER).hexdigest()


def test_socket_and_directory_are_refused(run: Run, output_layer: str, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert_one_line_error(run("export", output_layer, "-o", path), "socket")
    assert_one_line_error(run("export", output_layer, "-o", tmp_path), str(tmp_path))


def test_error_leaves_target_and_no_temp_file(run: Run, output_layer: str, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    out.write_bytes(b"keep me")
    assert_one_line_error(run("export", "0" * 12 + "f", "-o", out))
    assert out.read_bytes() == b"keep me"
    assert _temp_files(tmp_path) == []


_KILLED_EXPORT = """
import os, signal, sys
from pathlib import Path
from layerstore.cli import _install_handlers
from layerstore.outfile import open_output
_install_handlers()
with open_output(sys.argv[1], Path(sys.argv[2])) as fd:
    os.write(fd, b"partial")
    os.kill(os.getpid(), getattr(signal, sys.argv[3]))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_removes_the_temp_file(tmp_path: Path, signame: str) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    out = tmp_path / "out.tar"
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, out, journal, signame], check=False,
                          capture_output=True)
    assert proc.returncode != 0
    assert not out.exists()
    assert _temp_files(tmp_path) == [] and os.listdir(journal) == []


def test_sigkill_leftover_is_swept_by_the_store(run: Run, output_layer: str, tmp_path: Path,
                                                cli_env: dict[str, str]) -> None:
    journal = Path(cli_env["LAYERSTORE_ROOT"]) / "graph" / "_tmp"
    out = tmp_path / "out.tar"
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, out, journal, "SIGKILL"], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert len(_temp_files(tmp_path)) == 1  # the kill left it
    ok(run("gc"))
    assert _temp_files(tmp_path) == [] and not out.exists()
    assert os.listdir(journal) == []


def test_a_sweep_keeps_the_journal_entry_a_live_process_is_still_writing(tmp_path: Path) -> None:
    """The owner is in the entry's name: an entry still empty (its writer between open and write) is not dead."""
    from layerstore.outfile import JOURNAL_PREFIX, sweep_journal_entry
    from layerstore.owner import current_owner

    entry = tmp_path / f"{JOURNAL_PREFIX}{current_owner()}-0123456789abcdef"
    entry.touch()
    assert sweep_journal_entry(entry) is False
    assert entry.exists()


@pytest.mark.parametrize("named", [True, False], ids=["owner in the name", "owner in the first line"])
def test_a_sweep_removes_what_a_dead_process_recorded(tmp_path: Path, named: bool) -> None:
    from layerstore.outfile import JOURNAL_PREFIX, sweep_journal_entry

    dead = "4194305-1"  # above the kernel's largest pid: no such process
    tmp = tmp_path / ".out.tar.layerstore-0123456789ab.tmp"
    tmp.write_bytes(b"partial")
    keep = tmp_path / "not-a-temp-file"
    keep.write_bytes(b"keep")
    entry = tmp_path / (f"{JOURNAL_PREFIX}{dead}-0123456789abcdef" if named else f"{JOURNAL_PREFIX}0123456789abcdef")
    entry.write_text(f"{dead}\n{tmp}\n")
    assert sweep_journal_entry(entry) is True
    assert not entry.exists() and not tmp.exists()
    half = tmp_path / f"{JOURNAL_PREFIX}{dead}-fedcba9876543210"  # killed before it wrote anything
    half.touch()
    assert sweep_journal_entry(half) is True
    assert not half.exists() and keep.read_bytes() == b"keep"
