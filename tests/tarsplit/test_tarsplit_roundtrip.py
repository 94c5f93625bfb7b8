"""Byte-exact round trips of archives made by GNU tar, bsdtar and Python's tarfile, checked against Go's tar-split."""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from layerstore.errors import CorruptMetadata, DigestMismatch
from layerstore.tarsplit import (
    EntryType,
    EntryWriter,
    TarSplitRecorder,
    assemble,
    crc64_digest,
    crc64_update,
    disassemble,
    iter_entries,
    layer_opener,
)

from .conftest import Archive, go_entries, make_tree, need_tool, run, sha256_file, sha256_stream


def record(archive: Archive, read_size: int = 65536) -> tuple[Path, str]:
    """Stream the archive through a recorder; return the metadata path and the sha256 of what passed through."""
    metadata = archive.base / f"ours-{read_size}.json.gz"
    with open(archive.tar, "rb") as source, open(metadata, "wb") as out:
        recorder = TarSplitRecorder(source, out)
        passed = sha256_stream(recorder, read_size)
        assert recorder.complete
        recorder.close()
    return metadata, passed


def test_pass_through_is_identical_and_reassembles(archive: Archive) -> None:
    metadata, passed = record(archive)
    expected = sha256_file(archive.tar)
    assert passed == expected
    with open(metadata, "rb") as meta, assemble(meta, layer_opener(archive.extracted)) as rebuilt:
        assert sha256_stream(rebuilt) == expected


def test_metadata_is_what_go_tar_split_writes(archive: Archive) -> None:
    metadata, _ = record(archive)
    assert go_entries(metadata) == go_entries(archive.go_metadata)


def test_go_tar_split_reassembles_our_metadata(archive: Archive) -> None:
    metadata, _ = record(archive)
    out = archive.base / "go-from-ours.tar"
    run(need_tool("tar-split"), "asm", "--input", metadata, "--path", archive.extracted, "--output", out)
    assert sha256_file(out) == sha256_file(archive.tar)


def test_we_reassemble_go_metadata(archive: Archive) -> None:
    with open(archive.go_metadata, "rb") as meta, assemble(meta, archive.open_file) as rebuilt:
        assert sha256_stream(rebuilt, 4093) == sha256_file(archive.tar)


def test_every_member_has_a_file_entry(archive: Archive) -> None:
    metadata, _ = record(archive)
    with open(metadata, "rb") as meta:
        files = [e for e in iter_entries(meta) if e.type == EntryType.FILE]
    with tarfile.open(archive.tar, "r:") as tf:
        members = tf.getmembers()
    # tarfile hides the global pax header and strips the slash that ends directory names.
    recorded = [e.path.rstrip("/") for e in files if e.path != "././@PaxHeader"]
    assert recorded == [m.name.rstrip("/") for m in members]
    sizes = dict(zip(recorded, [e.size for e in files if e.path != "././@PaxHeader"], strict=True))
    for member in members:
        assert sizes[member.name.rstrip("/")] == (member.size if member.isreg() else 0)


def test_recording_does_not_depend_on_read_sizes(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", long_names=True, big=False)
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(tmp_path / "src" / "top", arcname="top")
    with open(tar, "ab") as f:
        f.write(b"trailing" * 100)
    data = tar.read_bytes()
    reference = io.BytesIO()
    disassemble(io.BytesIO(data), reference)
    rng = random.Random(11)
    for _ in range(3):
        out = io.BytesIO()
        recorder = TarSplitRecorder(io.BytesIO(data), out)
        passed = bytearray()
        while chunk := recorder.read(rng.choice([1, 7, 511, 512, 513, 1500, 10240])):
            passed += chunk
        assert bytes(passed) == data
        assert list(iter_entries(io.BytesIO(out.getvalue()))) == list(iter_entries(io.BytesIO(reference.getvalue())))


def test_source_without_readinto(tmp_path: Path) -> None:
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("file")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))

    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 100))

    out = io.BytesIO()
    recorder = TarSplitRecorder(ReadOnly(tar.read_bytes()), out)  # type: ignore[arg-type]
    assert recorder.read() == tar.read_bytes()
    assert recorder.complete
    rebuilt = assemble(io.BytesIO(out.getvalue()), lambda name: io.BytesIO(b"abc"))
    assert rebuilt.read() == tar.read_bytes()


def test_finish_drains_what_the_consumer_left(tmp_path: Path) -> None:
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("file")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    out = io.BytesIO()
    with open(tar, "rb") as source:
        recorder = TarSplitRecorder(source, out)
        recorder.read(100)
        assert not recorder.complete
        recorder.finish()
        assert recorder.complete
        assert recorder.bytes_read == tar.stat().st_size
    rebuilt = assemble(io.BytesIO(out.getvalue()), lambda name: io.BytesIO(b"abc"))
    assert rebuilt.read() == tar.read_bytes()


def test_empty_input_gives_empty_archive() -> None:
    out = io.BytesIO()
    disassemble(io.BytesIO(b""), out)
    assert list(iter_entries(io.BytesIO(out.getvalue()))) == []
    assert assemble(io.BytesIO(out.getvalue()), lambda name: io.BytesIO()).read() == b""


def test_tarfile_stream_consumer(tmp_path: Path) -> None:
    """A streaming tar reader (like the layer extractor) consumes the recorder; finish() takes the rest."""
    make_tree(tmp_path / "src", long_names=True, big=False)
    tar = tmp_path / "x.tar"
    run("tar", "-C", tmp_path / "src", "--format=posix", "-cf", tar, "top")
    metadata = io.BytesIO()
    names = []
    with open(tar, "rb") as source:
        recorder = TarSplitRecorder(source, metadata)
        with tarfile.open(fileobj=recorder, mode="r|") as tf:
            for member in tf:
                names.append(member.name)
                if member.isreg():
                    extracted = tf.extractfile(member)
                    assert extracted is not None
                    extracted.read()
        recorder.finish()
    assert "top/small.txt" in names
    with assemble(io.BytesIO(metadata.getvalue()), layer_opener(tmp_path / "src")) as rebuilt:
        assert rebuilt.read() == tar.read_bytes()


def test_layer_opener_stays_in_the_layer(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "dir").mkdir(parents=True)
    (layer / "dir" / "file").write_bytes(b"abc")
    (tmp_path / "secret").write_bytes(b"abc")
    os.symlink(tmp_path, layer / "escape")
    os.symlink("file", layer / "dir" / "link")
    open_file = layer_opener(layer)
    for name in ("dir/file", "./dir/file", "/dir/file", ".//dir/file"):
        with open_file(name) as f:
            assert f.read() == b"abc"
    for name in ("../secret", "dir/../../secret"):
        with pytest.raises(CorruptMetadata, match="outside the layer"):
            open_file(name)
    # The link resolves inside the layer (its target taken as a path below the layer root), not to tmp_path.
    with pytest.raises(FileNotFoundError):
        open_file("escape/secret")
    inside = layer / str(tmp_path).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "secret").write_bytes(b"in the layer")
    with open_file("escape/secret") as f:
        assert f.read() == b"in the layer"
    with pytest.raises(OSError):
        open_file("dir/link")
    out = io.BytesIO()
    writer = EntryWriter(out)
    writer.add(EntryType.FILE, name=b"dir/link", size=3, payload=crc64_digest(crc64_update(0, b"abc")))
    writer.close()
    with pytest.raises(DigestMismatch, match="dir/link"):
        assemble(io.BytesIO(out.getvalue()), open_file).read()
