"""`LayerRecording`: the digest and tar-split metadata of a layer, recorded in a forked worker or inline."""

from __future__ import annotations

import errno
import gzip
import io
import os
import select
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from layerstore.archive.compression import plain_file_span
from layerstore.counting import CountingReader
from layerstore.errors import InvalidArchive
from layerstore.recording import LayerRecording, can_record_in_worker

from .conftest import Archive, go_entries, sha256_file

# "file": worker mode where the worker reads the layer file itself instead of a pipe.
MODES = [pytest.param(True, id="worker"), pytest.param(False, id="inline"), pytest.param("file", id="worker-file")]


def _record(tar: Path, metadata: Path, parallel: bool | str, read_size: int = 65536) -> tuple[bytes, str, bool]:
    """Let a consumer read `read_size` pieces, then finish; return what it read, the digest and the mode."""
    with open(tar, "rb") as source, open(metadata, "wb") as meta:
        if parallel == "file":
            recording = LayerRecording(source, meta, parallel=True, source_file=plain_file_span(source))
            assert recording.reads_file
        else:
            recording = LayerRecording(source, meta, parallel=bool(parallel))
            assert not recording.reads_file
        try:
            consumed = bytearray()
            buffer = bytearray(read_size)
            while n := recording.readinto(buffer):
                consumed += buffer[:n]
                if len(consumed) > 4096 and read_size > 4096:
                    break  # stop early: finish() must read and record the rest
            digest = recording.finish()
            return bytes(consumed), digest, recording.in_worker
        finally:
            recording.close()


def _small_tar(path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        names = ["a/b", "a/c"]
        for n, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = bytes([n]) * (70_000 + n)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("parallel", MODES)
def test_metadata_and_digest_equal_go_tar_split_and_sha256(archive: Archive, parallel: bool, tmp_path: Path) -> None:
    metadata = tmp_path / "tar-data.json.gz"
    consumed, digest, in_worker = _record(archive.tar, metadata, parallel)
    assert in_worker is bool(parallel)
    assert archive.tar.read_bytes().startswith(consumed)
    assert digest == "sha256:" + sha256_file(archive.tar)
    assert go_entries(metadata) == go_entries(archive.go_metadata)


def test_both_modes_write_identical_metadata(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    open_fds = sorted(os.listdir("/proc/self/fd"))
    results = []
    for parallel in (True, False, "file"):
        meta = tmp_path / f"meta-{parallel}.json.gz"
        _, digest, _ = _record(tar, meta, parallel, read_size=512)
        results.append((digest, meta.read_bytes()))
    assert results[0] == results[1] == results[2]
    assert sorted(os.listdir("/proc/self/fd")) == open_fds  # pipes closed, nothing leaked


@pytest.mark.parametrize("parallel", MODES)
def test_malformed_archive_raises_invalid_archive_and_leaves_no_worker(parallel: bool, tmp_path: Path) -> None:
    tar = tmp_path / "dangling-pax.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("x" * 200))  # a pax header (long name), then its member
    tar.write_bytes(tar.read_bytes()[:1024] + bytes(1024))  # the member is gone
    children_before = _children()
    with pytest.raises(InvalidArchive, match="extension header is not followed by a member"):
        _record(tar, tmp_path / "meta.json.gz", parallel)
    assert _children() == children_before


@pytest.mark.parametrize("parallel", MODES)
def test_garbage_is_refused_from_a_read_or_finish(parallel: bool, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x01" * (3 << 20))  # large enough to fill the worker's pipe after it stopped
    children_before = _children()
    with pytest.raises(InvalidArchive, match="checksum"):
        _record(junk, tmp_path / "meta.json.gz", parallel, read_size=1 << 20)
    assert _children() == children_before


@pytest.mark.parametrize("parallel", MODES)
def test_metadata_write_failure_is_the_oserror(parallel: bool, tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    with open(tar, "rb") as source, open("/dev/full", "wb", buffering=0) as meta:
        recording = LayerRecording(source, meta, parallel=parallel)
        try:
            with pytest.raises(OSError) as raised:
                recording.finish()
        finally:
            recording.close()
    assert raised.value.errno == errno.ENOSPC


def test_the_worker_reads_the_file_from_the_offset_the_source_is_at(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    prefixed = tmp_path / "prefixed"
    prefixed.write_bytes(b"junk" * 1000 + tar.read_bytes())
    with open(prefixed, "rb") as source, open(tmp_path / "m.gz", "wb") as meta:
        source.read(4000)
        span = plain_file_span(CountingReader(source, lambda n: None))
        assert span == (source.fileno(), 4000)
        recording = LayerRecording(source, meta, parallel=True, source_file=span)
        try:
            assert recording.reads_file
            assert recording.finish() == "sha256:" + sha256_file(tar)
        finally:
            recording.close()
        # Closing the recording left the caller's file open, at the caller's position.
        assert os.fstat(source.fileno()) and source.tell() == 4000
    _record(tar, tmp_path / "pipe.gz", True)
    assert (tmp_path / "m.gz").read_bytes() == (tmp_path / "pipe.gz").read_bytes()


@pytest.mark.parametrize("change", ["append", "rewrite"])
def test_a_layer_file_that_changes_while_it_is_read_is_refused(change: str, tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    children_before = _children()
    with open(tar, "rb") as source, open(tmp_path / "m.gz", "wb") as meta:
        recording = LayerRecording(source, meta, parallel=True, source_file=plain_file_span(source))
        try:
            recording.read(1024)
            with open(tar, "r+b") as writer:
                if change == "append":
                    writer.seek(0, os.SEEK_END)
                    writer.write(bytes(512))
                else:
                    writer.seek(2048)
                    writer.write(b"x")
            with pytest.raises(InvalidArchive, match="changed while it was imported"):
                recording.finish()
        finally:
            recording.close()
    assert _children() == children_before


def test_only_plain_files_opened_for_reading_are_read_beside_the_consumer(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    gz = tmp_path / "l.tar.gz"
    subprocess.run(["gzip", "-k", "-c", str(tar)], stdout=gz.open("wb"), check=True)
    with open(tar, "rb") as plain, open(tar, "rb", buffering=0) as raw, open(gz, "rb") as compressed:
        assert plain_file_span(plain) == (plain.fileno(), 0)
        assert plain_file_span(raw) == (raw.fileno(), 0)
        assert plain_file_span(compressed) is None
        assert plain_file_span(io.BytesIO(tar.read_bytes())) is None  # type: ignore[arg-type]
    outer = tmp_path / "outer.tar"
    with tarfile.open(outer, "w") as tf:
        tf.add(tar, "layer.tar")
    with tarfile.open(outer) as tf:
        member = tf.extractfile("layer.tar")
        assert member is not None
        assert plain_file_span(member) is None  # type: ignore[arg-type]
    with gzip.open(gz, "rb") as decoder:
        decoder.read(1000)
        # The compressed file's descriptor, and a position in the decompressed bytes: never trusted.
        assert decoder.fileno() >= 0 and decoder.tell() == 1000
        assert plain_file_span(decoder) is None  # type: ignore[arg-type]
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        os.close(write_end)
        assert plain_file_span(pipe) is None


def test_close_before_finish_kills_and_reaps_the_worker(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    children_before = _children()
    with open(tar, "rb") as source, open(tmp_path / "meta.json.gz", "wb") as meta:
        recording = LayerRecording(source, meta, parallel=True)
        recording.read(1024)
        assert len(_children()) == len(children_before) + 1
        recording.close()
    assert _children() == children_before


def test_a_multithreaded_process_records_inline(tmp_path: Path) -> None:
    assert can_record_in_worker()
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert not can_record_in_worker()
        _, digest, in_worker = _record(_small_tar(tmp_path / "l.tar"), tmp_path / "meta.json.gz", None)  # type: ignore[arg-type]
    finally:
        stop.set()
        helper.join()
    assert not in_worker
    assert digest == "sha256:" + sha256_file(tmp_path / "l.tar")


def test_metadata_without_a_descriptor_is_recorded_inline(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    metadata = io.BytesIO()
    with open(tar, "rb") as source:
        recording = LayerRecording(source, metadata, parallel=True)
        try:
            assert not recording.in_worker
            assert recording.finish() == "sha256:" + sha256_file(tar)
        finally:
            recording.close()
    assert metadata.getvalue().startswith(b"\x1f\x8b")  # the gzip-compressed tar-split lines


def test_a_failed_fork_records_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    tar = _small_tar(tmp_path / "l.tar")
    _, digest, in_worker = _record(tar, tmp_path / "meta.json.gz", True)
    assert not in_worker
    assert digest == "sha256:" + sha256_file(tar)


def test_worker_does_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    tar = _small_tar(tmp_path / "l.tar")
    # A sleeper keeps the write end of the worker's input pipe open, so the
    # worker sees no end of input: only its parent's death can stop it.
    script = (
        "import os, subprocess, sys\n"
        "from layerstore.recording import LayerRecording\n"
        f"source = open({str(tar)!r}, 'rb'); meta = open({str(tmp_path / 'm.gz')!r}, 'wb')\n"
        "r = LayerRecording(source, meta, parallel=True)\n"
        "r.read(1024)\n"
        "quiet = subprocess.DEVNULL\n"
        "sleeper = subprocess.Popen(['sleep', '600'], pass_fds=[r._data_w], stdout=quiet, stderr=quiet)\n"
        "print(r._pid, sleeper.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -9, result.stderr
    worker, sleeper = map(int, result.stdout.split())
    try:
        try:
            pidfd = os.pidfd_open(worker)
        except ProcessLookupError:
            return  # already gone and reaped
        try:
            # A guard against hanging the run if the worker survives, not a speed limit.
            exited, _, _ = select.select([pidfd], [], [], 60)
        finally:
            os.close(pidfd)
        assert exited, "the recording worker outlived its killed parent"
    finally:
        os.kill(sleeper, signal.SIGKILL)


def _children() -> list[int]:
    """PIDs of this process's children that exist (zombies included)."""
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return [int(pid) for pid in path.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
