"""Malformed archives raise InvalidArchive; unreadable metadata raises CorruptMetadata."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from layerstore.errors import CorruptMetadata, InvalidArchive
from layerstore.tarsplit import TarSplitRecorder, assemble, disassemble, iter_entries

from .conftest import need_tool, run


def small_tar(fmt: int = tarfile.GNU_FORMAT, content: bytes = b"x" * 1000, name: str = "file") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content))
    return out.getvalue()


def record(data: bytes) -> bytes:
    out = io.BytesIO()
    disassemble(io.BytesIO(data), out)
    return out.getvalue()


def fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


@pytest.mark.parametrize("cut", [100, 512 + 200, 512 + 999])
def test_truncated_archive(cut: int) -> None:
    with pytest.raises(InvalidArchive, match="truncated"):
        record(small_tar()[:cut])


def test_truncated_long_name_header() -> None:
    data = small_tar(name="n" * 300)
    with pytest.raises(InvalidArchive, match="truncated"):
        record(data[: 512 + 100])
    with pytest.raises(InvalidArchive, match="not followed by a member"):
        record(data[:1024])


def test_garbage() -> None:
    with pytest.raises(InvalidArchive, match="checksum"):
        record(random.Random(5).randbytes(4096))


def test_bad_checksum() -> None:
    data = bytearray(small_tar())
    data[10] ^= 0x20
    with pytest.raises(InvalidArchive, match="checksum"):
        record(bytes(data))


def test_bad_numeric_field() -> None:
    data = bytearray(small_tar())
    block = data[:512]
    block[124:136] = b"0000000001x\x00"  # size
    fix_checksum(block)
    data[:512] = block
    with pytest.raises(InvalidArchive, match="octal"):
        record(bytes(data))


def test_bad_pax_record() -> None:
    data = bytearray(small_tar(tarfile.PAX_FORMAT, name="n" * 200))
    assert data[156:157] == b"x"
    start = data.index(b" path=")
    data[start - 3 : start] = b"999"  # record length beyond the header data
    with pytest.raises(InvalidArchive, match="pax"):
        record(bytes(data))


def test_error_is_raised_by_read_and_stays(tmp_path: Path) -> None:
    recorder = TarSplitRecorder(io.BytesIO(b"\x01" * 2048), io.BytesIO())
    with pytest.raises(InvalidArchive):
        recorder.read(4096)
    with pytest.raises(InvalidArchive):
        recorder.read(4096)
    assert not recorder.complete


def test_duplicate_member_is_kept_in_segments() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for content in (b"one", b"two"):
            info = tarfile.TarInfo("./dir/file")
            info.size = 3
            tf.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    metadata = record(data)
    files = [e for e in iter_entries(io.BytesIO(metadata)) if e.type == 1]
    assert [(e.name, e.size) for e in files] == [(b"./dir/file", 3)], "one file entry per path"
    assert assemble(io.BytesIO(metadata), lambda name: io.BytesIO(b"one")).read() == data


def test_sparse_member_content_stays_in_the_metadata(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(4 * 1024 * 1024)
        f.write(b"end")
    for fmt in ("gnu", "oldgnu", "posix"):
        tar = tmp_path / f"{fmt}.tar"
        run(need_tool("tar"), "-C", src, "--sparse", f"--format={fmt}", "-cf", tar, "sparse")
        data = tar.read_bytes()
        metadata = record(data)
        assert all(not e.size for e in iter_entries(io.BytesIO(metadata))), "a sparse member would be read back"

        def nothing(name: str) -> io.BytesIO:
            raise AssertionError(f"{name} read from disk")

        assert assemble(io.BytesIO(metadata), nothing).read() == data


def test_zero_block_then_garbage_is_trailing_data() -> None:
    data = small_tar()
    end = 512 + 1024  # header, 1000 bytes of content, padding
    tampered = data[:end] + bytes(512) + b"not a header".ljust(512, b"?") + b"tail"
    metadata = record(tampered)
    rebuilt = assemble(io.BytesIO(metadata), lambda name: io.BytesIO(b"x" * 1000)).read()
    assert rebuilt == tampered


# -- metadata ------------------------------------------------------------------


def corrupt(metadata: bytes) -> None:
    with pytest.raises(CorruptMetadata):
        list(iter_entries(io.BytesIO(metadata)))
    with pytest.raises(CorruptMetadata):
        assemble(io.BytesIO(metadata), lambda name: io.BytesIO(b"x" * 1000)).read()


def test_metadata_not_gzip() -> None:
    corrupt(b'{"type":2,"payload":"","position":0}\n')


def test_metadata_truncated_gzip() -> None:
    good = record(small_tar())
    corrupt(good[: len(good) // 2])


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"type":3,"payload":"","position":0}',
        b'{"type":"2","payload":"","position":0}',
        b'{"type":2,"payload":"***","position":0}',
        b'{"type":1,"name":"file","size":1000,"payload":null,"position":0}',
        b'{"type":1,"name":"file","size":1000,"payload":"AAAA","position":0}',
        b'{"type":1,"name":"file","size":-1,"position":0}',
    ],
)
def test_metadata_bad_lines(line: bytes) -> None:
    corrupt(gzip.compress(line + b"\n"))


def test_go_tar_split_refuses_duplicates_but_reassembles_ours(tmp_path: Path) -> None:
    """Go cannot record repeated paths; our metadata (one file entry, the repeat in segments) is fine for it."""
    out = tmp_path / "dup.tar"
    with tarfile.open(out, "w") as tf:
        for content in (b"one", b"two"):
            info = tarfile.TarInfo("file")
            info.size = 3
            tf.addfile(info, io.BytesIO(content))
    tool = need_tool("tar-split")
    result = subprocess.run(
        [tool, "disasm", "--no-stdout", "--output", os.fspath(tmp_path / "m.gz"), os.fspath(out)],
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0
    assert b"duplicate" in result.stderr
    ours = tmp_path / "ours.gz"
    ours.write_bytes(record(out.read_bytes()))
    files = tmp_path / "files"
    files.mkdir()
    (files / "file").write_bytes(b"one")  # the first member's content: the importer keeps it so
    rebuilt = tmp_path / "rebuilt.tar"
    run(tool, "asm", "--input", ours, "--path", files, "--output", rebuilt)
    assert rebuilt.read_bytes() == out.read_bytes()
