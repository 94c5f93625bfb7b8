"""The export's reads: one read per small file (a byte more than recorded), and the same errors as before."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from layerstore.errors import DigestMismatch
from layerstore.tarsplit import assemble
from layerstore.tarsplit.layerfiles import layer_file_opener

from .conftest import extracted_layer

CONTENTS = {"empty": b"", "one": b"x", "block": b"b" * 512, "odd": os.urandom(70001), "large": os.urandom(1 << 20)}


@pytest.fixture
def layer(tmp_path: Path) -> tuple[bytes, bytes, Path]:
    """(tar bytes, metadata bytes, directory extracted by GNU tar)."""
    src = tmp_path / "src"
    src.mkdir()
    for name, content in CONTENTS.items():
        (src / name).write_bytes(content)
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(src, arcname="d")
    return extracted_layer(tar, tmp_path / "ext")


@pytest.fixture
def root_fd(layer: tuple[bytes, bytes, Path]) -> Iterator[int]:
    fd = os.open(layer[2], os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


class _Trickle:
    """A raw handle that returns at most 7 bytes a read (as a pipe might): short reads before the end."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by close()

    def read(self, size: int = -1) -> bytes:
        return self._f.read(min(size, 7) if size >= 0 else 7)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Trickle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _openers(root: Path, root_fd: int) -> dict[str, Callable[[str], BinaryIO]]:
    return {
        "layer": layer_file_opener("L", root_fd),
        "buffered": lambda name: open(root / name, "rb"),  # the assembler closes it
        "trickle": lambda name: _Trickle(root / name),  # type: ignore[return-value]
    }


@pytest.mark.parametrize("kind", ["layer", "buffered", "trickle"])
def test_unchanged_layer_reassembles(layer: tuple[bytes, bytes, Path], root_fd: int, kind: str) -> None:
    data, metadata, root = layer
    with assemble(io.BytesIO(metadata), _openers(root, root_fd)[kind]) as stream:
        assert stream.read() == data


@pytest.mark.parametrize("kind", ["layer", "buffered", "trickle"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b + b"!", "longer than the"),
        (lambda b: b + b"!" * 5000, "longer than the"),
        (lambda b: b[:-1], "shorter than recorded"),
        (lambda b: b[:1] + bytes([b[1] ^ 1]) + b[2:], "does not match its recorded CRC-64"),
    ],
    ids=["one-byte-more", "much-more", "one-byte-less", "same-size"],
)
def test_changed_small_file_is_named(
    layer: tuple[bytes, bytes, Path], root_fd: int, kind: str, change: Callable[[bytes], bytes], message: str
) -> None:
    _, metadata, root = layer
    for name in ("block", "odd"):
        target = root / "d" / name
        original = target.read_bytes()
        target.write_bytes(change(original))
        try:
            with (
                pytest.raises(DigestMismatch, match=message),
                assemble(io.BytesIO(metadata), _openers(root, root_fd)[kind]) as stream,
            ):
                stream.read()
        finally:
            target.write_bytes(original)


def test_empty_file_that_grew_is_named(layer: tuple[bytes, bytes, Path], root_fd: int) -> None:
    _, metadata, root = layer
    (root / "d" / "empty").write_bytes(b"now")
    # An empty member has no content entry to read: the tar is unchanged (as before).
    with assemble(io.BytesIO(metadata), layer_file_opener("L", root_fd)) as stream:
        assert stream.read() == layer[0]
