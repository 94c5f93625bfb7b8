"""Reassembly refuses content that differs from what was recorded, naming the file."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from layerstore.errors import CorruptMetadata, DigestMismatch
from layerstore.tarsplit import EntryType, EntryWriter, assemble

from .conftest import NON_UTF8, extracted_layer, make_tree, opener


@pytest.fixture
def layer(tmp_path: Path) -> tuple[bytes, bytes, Path]:
    """(tar bytes, metadata bytes, directory extracted by GNU tar) for a small GNU-format archive."""
    make_tree(tmp_path / "src", long_names=True, big=False)
    (tmp_path / "src" / "top" / "medium.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(tmp_path / "src" / "top", arcname="top")
    return extracted_layer(tar, tmp_path / "ext")


def rebuild(metadata: bytes, root: Path) -> bytes:
    with assemble(io.BytesIO(metadata), opener(root)) as stream:
        return stream.read()


def test_unchanged_tree_reassembles(layer: tuple[bytes, bytes, Path]) -> None:
    data, metadata, root = layer
    assert rebuild(metadata, root) == data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[::-1]), "does not match its recorded CRC-64"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "shorter than recorded"),
        (lambda p: p.write_bytes(p.read_bytes() + b"more"), "longer than"),
        (lambda p: p.unlink(), "cannot be read"),
    ],
    ids=["same-size", "shorter", "longer", "missing"],
)
def test_changed_file_is_named(layer: tuple[bytes, bytes, Path], change, message: str) -> None:  # type: ignore[no-untyped-def]
    _, metadata, root = layer
    change(root / "top" / "exact512")
    with pytest.raises(DigestMismatch, match=message) as info:
        rebuild(metadata, root)
    assert str(info.value).startswith("top/exact512: ")


def test_change_in_big_file_is_detected_before_its_last_chunk(layer: tuple[bytes, bytes, Path]) -> None:
    _, metadata, root = layer
    target = root / "top" / "medium.bin"
    content = bytearray(target.read_bytes())
    content[-1] ^= 1
    target.write_bytes(content)
    out = bytearray()
    with assemble(io.BytesIO(metadata), opener(root)) as stream, pytest.raises(DigestMismatch, match="medium"):
        while chunk := stream.read(65536):
            out += chunk
    # the damaged member was never delivered complete
    start = bytes(out).find(bytes(content[:4096]))
    assert start > 0
    assert len(out) - start < len(content)


def test_non_utf8_name_is_opened_with_surrogate_escapes(layer: tuple[bytes, bytes, Path]) -> None:
    data, metadata, root = layer
    asked: list[str] = []

    def open_file(name: str):  # type: ignore[no-untyped-def]
        asked.append(name)
        return open(root / name, "rb")

    with assemble(io.BytesIO(metadata), open_file) as stream:
        assert stream.read() == data
    assert f"top/{NON_UTF8}" in asked
    (root / "top" / NON_UTF8).write_bytes(b"changed\n")
    with pytest.raises(DigestMismatch, match=r"caf\\xe9"):
        rebuild(metadata, root)


def test_close_runs_on_close_once_and_closes_open_file(layer: tuple[bytes, bytes, Path]) -> None:
    _, metadata, root = layer
    opened: list[io.BufferedReader] = []
    calls: list[int] = []

    def open_file(name: str) -> io.BufferedReader:
        handle = opener(root)(name)
        opened.append(handle)
        return handle

    stream = assemble(io.BytesIO(metadata), open_file, on_close=lambda: calls.append(1))
    while stream.read(4096):
        if opened and not opened[-1].closed:
            break
    stream.close()
    stream.close()
    assert calls == [1]
    assert opened and all(h.closed for h in opened)


def test_file_entry_without_name_but_with_content_is_corrupt(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = EntryWriter(out)
    writer.add(EntryType.FILE, name=b"", size=3, payload=bytes(8))
    writer.close()
    with pytest.raises(CorruptMetadata, match="no name"):
        assemble(io.BytesIO(out.getvalue()), lambda name: io.BytesIO(b"abc")).read()
