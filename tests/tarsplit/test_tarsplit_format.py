"""The metadata format: CRC-64 as Go computes it, Go-identical JSON, older metadata forms, header corner cases."""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from layerstore.tarsplit import (
    Crc64,
    Entry,
    EntryType,
    assemble,
    crc64_digest,
    crc64_update,
    disassemble,
    encode_entry,
    iter_entries,
)

from .conftest import go_entries, need_tool, opener, run, sha256_file


def test_crc64_matches_go_iso_check_value() -> None:
    # CRC-64/GO-ISO check value; Go's Sum() appends it big-endian.
    assert crc64_update(0, b"123456789") == 0xB90956C775A41001
    assert crc64_digest(0xB90956C775A41001) == bytes.fromhex("b90956c775a41001")
    crc = Crc64()
    for piece in (b"1234", memoryview(b"56789")):
        crc.update(piece)
    assert crc.digest() == bytes.fromhex("b90956c775a41001")
    assert crc64_digest(crc64_update(0, b"")) == bytes(8)


def test_crc64_matches_go_tar_split(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(100_000)
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("payload")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    metadata = tmp_path / "m.json.gz"
    run(need_tool("tar-split"), "disasm", "--no-stdout", "--output", metadata, tar)
    (entry,) = [e for e in go_entries(metadata) if e["type"] == 1]
    assert base64.b64decode(entry["payload"]) == crc64_digest(crc64_update(0, data))


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (Entry(EntryType.SEGMENT, payload=b"\x00\x01"), '{"type":2,"payload":"AAE=","position":0}'),
        (Entry(EntryType.FILE, name=b"dir/", position=3), '{"type":1,"name":"dir/","payload":null,"position":3}'),
        (
            Entry(EntryType.FILE, name=b"a<b>&c", size=5, payload=bytes(8), position=1),
            '{"type":1,"name":"a\\u003cb\\u003e\\u0026c","size":5,"payload":"AAAAAAAAAAA=","position":1}',
        ),
        (
            Entry(EntryType.FILE, name="é\u2028\t\x01".encode(), position=2),
            '{"type":1,"name":"é\\u2028\\t\\u0001","payload":null,"position":2}',
        ),
        (
            Entry(EntryType.FILE, name=b"caf\xe9", position=4),
            '{"type":1,"name_raw":"Y2Fm6Q==","payload":null,"position":4}',
        ),
    ],
)
def test_json_lines_as_go_encodes_them(entry: Entry, line: str) -> None:
    assert encode_entry(entry) == line.encode() + b"\n"
    (decoded,) = iter_entries(io.BytesIO(gzip.compress(encode_entry(entry))))
    assert decoded == entry


def gnu_tar_with_files(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "a").write_bytes(b"a" * 700)
    (src / "dir" / "sub" / "b").write_bytes(b"b" * 10)
    tar = tmp_path / "x.tar"
    run(need_tool("tar"), "-C", src, "--sort=name", "--format=gnu", "-cf", tar, "dir")
    with open(tar, "ab") as f:
        f.write(b"trailing bytes" * 1000)
    return tar, src


def rewrite(metadata: bytes, transform) -> bytes:  # type: ignore[no-untyped-def]
    objects = [json.loads(line) for line in gzip.decompress(metadata).splitlines()]
    lines = [json.dumps(o) for o in transform(objects)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_docker_1_8_metadata_with_unnamed_entries(tmp_path: Path) -> None:
    tar, src = gnu_tar_with_files(tmp_path)
    metadata = io.BytesIO()
    with open(tar, "rb") as f:
        disassemble(f, metadata)

    def drop_names(objects: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        for obj in objects:
            if obj["type"] == 1 and not obj.get("size"):
                obj.pop("name", None)
        return objects

    old = rewrite(metadata.getvalue(), drop_names)
    unnamed = [e for e in iter_entries(io.BytesIO(old)) if e.type == EntryType.FILE and not e.name]
    assert len(unnamed) == 2  # dir/ and dir/sub/
    rebuilt = assemble(io.BytesIO(old), opener(src)).read()
    assert rebuilt == tar.read_bytes()


@pytest.mark.parametrize("form", ["one-trailing-segment", "small-chunks", "empty-and-null-segments"])
def test_older_segment_forms(tmp_path: Path, form: str) -> None:
    tar, src = gnu_tar_with_files(tmp_path)
    metadata = io.BytesIO()
    with open(tar, "rb") as f:
        disassemble(f, metadata)

    def transform(objects: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        if form == "one-trailing-segment":
            last_file = max(i for i, o in enumerate(objects) if o["type"] == 1)
            tail = b"".join(base64.b64decode(o["payload"]) for o in objects[last_file + 1 :])
            return [*objects[: last_file + 1], {"type": 2, "payload": base64.b64encode(tail).decode(), "position": 0}]
        if form == "small-chunks":
            out = []
            for obj in objects:
                if obj["type"] != 2:
                    out.append(obj)
                    continue
                raw = base64.b64decode(obj["payload"])
                out += [
                    {"type": 2, "payload": base64.b64encode(raw[i : i + 100]).decode(), "position": 0}
                    for i in range(0, len(raw), 100)
                ]
            return out
        return [{"type": 2, "payload": None}, *objects, {"type": 2, "payload": "", "position": 99}]

    old = rewrite(metadata.getvalue(), transform)
    assert assemble(io.BytesIO(old), opener(src)).read() == tar.read_bytes()
    old_path = tmp_path / "old.json.gz"
    old_path.write_bytes(old)
    out = tmp_path / "go.tar"
    run(need_tool("tar-split"), "asm", "--input", old_path, "--path", src, "--output", out)
    assert out.read_bytes() == tar.read_bytes()


def fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def check_against_tools(tmp_path: Path, data: bytes, files: dict[str, bytes]) -> None:
    """GNU tar extracts `data` to `files`; we and Go record and rebuild it byte for byte."""
    tar = tmp_path / "crafted.tar"
    tar.write_bytes(data)
    extracted = tmp_path / "ext"
    extracted.mkdir()
    run(need_tool("tar"), "-xf", tar, "-C", extracted)
    for name, content in files.items():
        assert (extracted / name).read_bytes() == content
    ours = tmp_path / "ours.json.gz"
    with open(tar, "rb") as f, open(ours, "wb") as m:
        disassemble(f, m)
    with open(ours, "rb") as m:
        assert assemble(m, opener(extracted)).read() == data
    theirs = tmp_path / "go.json.gz"
    run(need_tool("tar-split"), "disasm", "--no-stdout", "--output", theirs, tar)
    assert go_entries(ours) == go_entries(theirs)
    out = tmp_path / "go.tar"
    run(need_tool("tar-split"), "asm", "--input", ours, "--path", extracted, "--output", out)
    assert sha256_file(out) == sha256_file(tar)


def test_base256_size_field(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("b256")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"12345"))
    data = bytearray(buf.getvalue())
    header = data[:512]
    header[124:136] = b"\x80" + (5).to_bytes(11, "big")
    fix_checksum(header)
    data[:512] = header
    check_against_tools(tmp_path, bytes(data), {"b256": b"12345"})


def test_pax_size_overrides_header_size(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("paxsize")
        info.size = 5
        info.pax_headers = {"size": "5", "comment": "size in pax"}
        tf.addfile(info, io.BytesIO(b"abcde"))
    data = bytearray(buf.getvalue())
    assert data[156:157] == b"x"
    pax_size = int(data[124:135], 8)
    start = 512 + -(-pax_size // 512) * 512
    header = data[start : start + 512]
    assert header[:7] == b"paxsize"
    header[124:136] = b"00000000000\x00"  # the ustar field says 0; the pax record wins
    fix_checksum(header)
    data[start : start + 512] = header
    check_against_tools(tmp_path, bytes(data), {"paxsize": b"abcde"})


def test_header_only_member_with_size_field_records_no_content(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        info = tarfile.TarInfo("file")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"xyz"))
    data = bytearray(buf.getvalue())
    header = data[:512]
    header[124:136] = b"00000001000\x00"  # a directory claiming 512 bytes it does not have
    fix_checksum(header)
    data[:512] = header
    metadata = io.BytesIO()
    disassemble(io.BytesIO(bytes(data)), metadata)
    entries = list(iter_entries(io.BytesIO(metadata.getvalue())))
    assert [(e.path, e.size) for e in entries if e.type == EntryType.FILE] == [("dir/", 0), ("file", 3)]
    rebuilt = assemble(io.BytesIO(metadata.getvalue()), lambda name: io.BytesIO(b"xyz")).read()
    assert rebuilt == bytes(data)
