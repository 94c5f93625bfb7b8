"""Compression detection and decompression; corrupt or truncated input is InvalidArchive."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, outside_untouched

from layerstore.archive.apply import apply_tar
from layerstore.archive.compression import decompressed, detect_compression
from layerstore.errors import InvalidArchive

TOOLS = {"gzip": ["gzip", "-c"], "bzip2": ["bzip2", "-c"], "xz": ["xz", "-c"], "zstd": ["zstd", "-q", "-c"]}


def _tool(kind: str) -> list[str]:
    argv = TOOLS[kind]
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed: apt-get install {argv[0]}")
    return argv


def _compress(kind: str, data: bytes) -> bytes:
    return subprocess.run(_tool(kind), input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def tar_bytes() -> bytes:
    b = TarBuilder()
    for i in range(20):
        b.add(f"dir/file{i}", data=os.urandom(3000) + bytes(100_000))
    return b.bytes()


class _Pipe(io.RawIOBase):
    """A non-seekable stream that hands out small reads, like a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data), 777)
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_detect_compression() -> None:
    assert detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"BZh91AY") == "bzip2"
    assert detect_compression(b"\xfd7zXZ\x00\x00") == "xz"
    assert detect_compression(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert detect_compression(b"etc/passwd\0") == "none"
    assert detect_compression(b"") == "none"


@pytest.mark.parametrize("kind", ["none", *TOOLS])
@pytest.mark.parametrize("seekable", [True, False], ids=["file", "pipe"])
def test_decompress_and_apply(tmp_path: Path, tar_bytes: bytes, kind: str, seekable: bool) -> None:
    data = tar_bytes if kind == "none" else _compress(kind, tar_bytes)
    assert detect_compression(data[:6]) == kind
    if seekable:
        path = tmp_path / "layer"
        path.write_bytes(data)
        source: io.IOBase = path.open("rb")
    else:
        source = _Pipe(data)
    with source:
        out = decompressed(source)  # type: ignore[arg-type]
        assert out.read() == tar_bytes
    dest = tmp_path / "dest"
    dest.mkdir()
    assert apply_tar(decompressed(_Pipe(data)), dest) == 20 * 103_000  # type: ignore[arg-type]
    assert len(os.listdir(dest / "dir")) == 20


def test_multi_member_streams(tar_bytes: bytes) -> None:
    half = len(tar_bytes) // 2
    for kind in TOOLS:
        data = _compress(kind, tar_bytes[:half]) + _compress(kind, tar_bytes[half:])
        assert decompressed(io.BytesIO(data)).read() == tar_bytes, kind


@pytest.mark.parametrize("kind", list(TOOLS))
@pytest.mark.parametrize("cut", ["half", "tail"])
def test_truncated_compressed_input(layer: Path, tar_bytes: bytes, kind: str, cut: str) -> None:
    data = _compress(kind, tar_bytes)
    data = data[: len(data) // 2] if cut == "half" else data[:-4]
    for source in (io.BytesIO(data), _Pipe(data)):
        with pytest.raises(InvalidArchive):
            apply_tar(decompressed(source), layer)  # type: ignore[arg-type]
    assert outside_untouched(layer)


@pytest.mark.parametrize("kind", list(TOOLS))
def test_corrupt_compressed_input(layer: Path, tar_bytes: bytes, kind: str) -> None:
    data = bytearray(_compress(kind, tar_bytes))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    with pytest.raises(InvalidArchive):
        apply_tar(decompressed(io.BytesIO(bytes(data))), layer)


@pytest.mark.parametrize("kind", list(TOOLS))
def test_compressed_non_tar_input(layer: Path, kind: str) -> None:
    data = _compress(kind, b"hello, this is text and not a tar\n" * 50)
    with pytest.raises(InvalidArchive, match="not a tar archive"):
        apply_tar(decompressed(io.BytesIO(data)), layer)


def test_closing_the_decompressed_stream_leaves_the_source_open(tmp_path: Path, tar_bytes: bytes) -> None:
    for kind in TOOLS:
        path = tmp_path / kind
        path.write_bytes(_compress(kind, tar_bytes))
        with path.open("rb") as f:
            out = decompressed(f)
            out.read(10)
            out.close()
            assert not f.closed
