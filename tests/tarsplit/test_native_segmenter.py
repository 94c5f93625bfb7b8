"""The native segmenter (``layerstore_accel.segment_members``) records exactly what the Python segmenter records.

`layerstore.tarsplit.segmenter.Segmenter` hands runs of members of the common
shape to the native code when ``layerstore-accel`` is installed and takes
every other member in Python.  Each archive here is recorded both ways, fed
in random chunks, and must give the same tar-split lines byte for byte, or
the same error; the native code must also take most of the common members
(else these tests would compare Python with itself) and leave the unusual
ones.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
from collections.abc import Callable

import pytest

from layerstore.archive.tarfields import checksum_ok
from layerstore.errors import InvalidArchive
from layerstore.tarsplit import segmenter
from layerstore.tarsplit.format import EntryWriter
from layerstore.tarsplit.segmenter import Segmenter

pytestmark = pytest.mark.integration

_NAMES = [
    "a", "dir/", "./dir/sub/", "d0/d1/file.txt", "./x", "././y", ".hidden", "a/.b", "a/../b", "a//b", "./",
    "a/./b", "a/b",
    ".", "/abs", "caf\u00e9", "quote\"d", "amp&", "lt<gt>", "back\\slash", "x" * 99, "p/" * 60 + "leaf",
    "q" * 120, "etc/.wh.passwd", ".wh..wh..opq", "dup", "dup/", "./dup", "",
]
_PAX_EXTRA = [
    {}, {}, {"mtime": "1700000000.25"}, {"atime": "1.5", "ctime": "2"}, {"path": "from/pax"}, {"path": ""},
    {"size": "3"}, {"size": ""}, {"uid": "+5"}, {"gid": "-1"}, {"mtime": "-1"}, {"mtime": "1."}, {"mtime": ".5"},
    {"comment": "hello=world"},
    {"SCHILY.xattr.user.k": "v"}, {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"},
    {"GNU.sparse.major": "1"}, {"linkpath": "somewhere"}, {"uname": "r\u00f6\u00f6t"},
]
_MEMBER_FIELDS: dict[str, list[object]] = {
    "type": [tarfile.REGTYPE] * 4
    + [tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]
    + [tarfile.CHRTYPE, tarfile.FIFOTYPE],
    "mode": [0o644, 0o755, 0o4755],
    "uid": [0, 1000, 2**21 - 1, 2**21],
    "mtime": [0, 1_700_000_000, 8**11, 1_700_000_000.5],
    "linkname": ["", "target", "l" * 101],
}
_ALPHABET = b"0123456701234567 \x00\x0089+-x_\x80\xff"
_FIELDS = ((100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (156, 1), (257, 8), (329, 8), (345, 12))

Run = Callable[..., object]


@pytest.fixture
def native(require_accel: Callable[[object, str], Run]) -> Run:
    return require_accel(segmenter._native_run, "segment_members")


def _record(data: bytes, chunks: list[int]) -> bytes | str:
    """The tar-split lines of `data` fed in pieces of the sizes `chunks` (the rest at once), or the error."""
    out = io.BytesIO()
    writer = EntryWriter(out)
    parser = Segmenter(writer)
    view = memoryview(data)
    pos = 0
    try:
        for size in chunks:
            parser.feed(view[pos : pos + size])
            pos += size
        parser.feed(view[pos:])
        parser.finish()
        writer.close()
    except InvalidArchive as exc:
        return f"InvalidArchive: {exc}"
    return gzip.decompress(out.getvalue())


def _both_ways(data: bytes, chunks: list[int], monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    with_native = _record(data, chunks)
    with monkeypatch.context() as patch:
        patch.setattr(segmenter, "_native_run", None)
        python = _record(data, [len(data)])
    return with_native, python


def _archive(rng: random.Random, fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for _ in range(rng.randrange(1, 9)):
            info = tarfile.TarInfo(rng.choice(_NAMES) or "empty")
            for field, values in _MEMBER_FIELDS.items():
                setattr(info, field, rng.choice(values))
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = dict(rng.choice(_PAX_EXTRA))
            data = os.urandom(rng.choice([0, 1, 511, 512, 513, 3000, 70_000])) if info.isreg() else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except ValueError:  # a value this format cannot hold
                continue
    raw = buf.getvalue()
    if rng.random() < 0.1:
        raw += os.urandom(rng.randrange(1, 2000))  # bytes after the end of the archive
    return raw


def _mutated(rng: random.Random, data: bytes) -> bytes:
    """`data` with one byte of one header changed (a field, the pax data or the padding); checksum fixed or not."""
    blocks = bytearray(data)
    starts = [pos for pos in range(0, len(blocks) - 512, 512) if checksum_ok(bytes(blocks[pos : pos + 512]))]
    if not starts:
        return data
    pos = rng.choice(starts)
    if rng.random() < 0.25 and pos + 1024 <= len(blocks):  # in the block after the header (pax records, content)
        blocks[pos + 512 + rng.randrange(512)] = rng.choice(b"0 =\n\x00x9")
        return bytes(blocks)
    start, width = rng.choice(_FIELDS)
    blocks[pos + start + rng.randrange(width)] = rng.choice(_ALPHABET + b"0ugKLxgS157")
    if start != 148 and rng.random() < 0.8:  # a header that still passes its checksum
        unsigned, _ = tarfile.calc_chksums(bytes(blocks[pos : pos + 512]))  # type: ignore[attr-defined]
        blocks[pos + 148 : pos + 156] = b"%06o\x00 " % unsigned
    return bytes(blocks)


def _chunks(rng: random.Random, length: int) -> list[int]:
    sizes = []
    while sum(sizes) < length and rng.random() < 0.9:
        sizes.append(rng.choice([1, 100, 511, 512, 513, 1024, 4096, 65536, 131072]))
    return sizes


@pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"]
)
def test_random_archives_record_the_same_with_and_without_the_native_segmenter(
    fmt: int, native: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261207 + fmt)
    calls = {"took": 0, "left": 0}

    def counting(data: memoryview, pos: int, *rest: object) -> object:
        result = native(data, pos, *rest)
        calls["took" if result[0] != pos else "left"] += 1  # type: ignore[index]
        return result

    monkeypatch.setattr(segmenter, "_native_run", counting)
    for round_ in range(500):
        data = _archive(rng, fmt)
        if round_ % 2:
            data = _mutated(rng, data)
        with_native, python = _both_ways(data, _chunks(rng, len(data)), monkeypatch)
        assert with_native == python, f"round {round_}"
    assert calls["took"] > 150 and calls["left"] > 150, calls  # it takes the common members, and not all


def test_a_layer_of_many_members_is_recorded_natively(native: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer as GNU tar writes it in pax format: the native code takes the members a chunk boundary does not cut."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(300):
            info = tarfile.TarInfo(f"./usr/lib/dir{n % 7}/file{n}")
            info.mtime = 1_700_000_000 + n / 4
            info.pax_headers = {"atime": "1700000000.5", "ctime": "1700000001"}
            data = bytes([n % 256]) * (n * 37)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    members = {"native": 0}

    def counting(view: memoryview, pos: int, pending: bytearray, seen: set[bytes], *rest: object) -> object:
        before = len(seen)
        result = native(view, pos, pending, seen, *rest)
        members["native"] += len(seen) - before
        return result

    monkeypatch.setattr(segmenter, "_native_run", counting)
    with_native, python = _both_ways(data, [131072] * (len(data) // 131072 + 1), monkeypatch)
    assert with_native == python
    assert members["native"] >= 290


@pytest.mark.parametrize(
    "name",
    ["etc/.wh.passwd", "quote\"d", "caf\u00e9", "./", "a//b", "dup"],
    ids=["whiteout", "quote", "non-ascii", "dot-slash", "double-slash", "repeated"],
)
def test_members_outside_the_common_shape_are_left_to_python(
    name: str, native: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8") as tar:
        tar.addfile(tarfile.TarInfo("dup"))
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = buf.getvalue()
    run = native(memoryview(data), 512, bytearray(), {b"dup"}, 1, lambda crc, view: crc)
    assert run[0] == 512  # nothing taken
    with_native, python = _both_ways(data, [], monkeypatch)
    assert with_native == python


def _gnu_header(name: bytes, **fields: bytes) -> bytes:
    """A GNU tar header of a 3-byte file `name`, with raw bytes at the offsets given as ``at<offset>``."""
    info = tarfile.TarInfo(name.decode())
    info.size = 3
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT)[:512])
    for key, value in fields.items():
        offset = int(key[2:])
        block[offset : offset + len(value)] = value
    unsigned, _ = tarfile.calc_chksums(bytes(block))  # type: ignore[attr-defined]
    block[148:156] = b"%06o\x00 " % unsigned
    return bytes(block) + b"abc".ljust(512, b"\x00")


def _pax_member(records: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("file")
        info.size = 3
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()[:-1024]  # without the end of the archive


@pytest.mark.parametrize(
    "member",
    [
        _gnu_header(b"file", at345=b"14524770400\x00"),  # a GNU access time
        _gnu_header(b"file", at345=b"old/prefix\x00"),  # a ustar prefix where GNU keeps times (old Go)
        _gnu_header(b"file", at124=b"\x80" + bytes(10) + b"\x03"),  # base-256 size
        _gnu_header(b"file", at257=b"ustar\x0000", at508=b"tar\x00"),  # star
        _gnu_header(b"file", at257=bytes(8)),  # v7
        _gnu_header(b"file", at329=b"  12   \x00"),  # devmajor with leading spaces
        _pax_member({"mtime": ".5"}),
        _pax_member({"uid": "+7"}),
        _pax_member({"GNU.sparse.major": "1"}),
        _pax_member({"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}),
    ],
    ids=["gnu-atime", "gnu-old-prefix", "base-256", "star", "v7", "device-spaces", "time-fraction-only",
         "signed-uid", "gnu-sparse", "nul-in-record"],
)
def test_unusual_members_are_left_to_python(member: bytes, native: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    data = member + bytes(1024)
    run = native(memoryview(data), 0, bytearray(), set(), 0, lambda crc, view: crc)
    assert run[0] == 0  # nothing taken
    with_native, python = _both_ways(data, [], monkeypatch)
    assert with_native == python
