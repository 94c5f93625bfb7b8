"""The native header decoder (``layerstore_accel.parse_header``) gives the archive reader what its Python code gives.

The archive reader (`layerstore.archive.tarstream.TarReader`) hands each header
to the native decoder when ``layerstore-accel`` is installed and decodes in
Python whatever the decoder leaves (None).  Every archive here is read both
ways and must give the same entries, or the same error; the decoder must also
take the common headers (else it would be no faster and these tests would
compare Python with itself).
"""

from __future__ import annotations

import io
import os
import random
import tarfile
from collections.abc import Callable

import pytest

from layerstore.archive import tarstream
from layerstore.archive._accel import HeaderFields
from layerstore.archive.tarfields import checksum_ok, parse_pax
from layerstore.archive.tarstream import TarEntry, TarReader
from layerstore.errors import InvalidArchive

pytestmark = pytest.mark.integration

_ALPHABET = b"0123456701234567 \x00\x0089+-x_\x80\xff"
_NUMBERS = ((100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8))  # mode .. devminor
_NAMES = ["a", "dir/", "d0/d1/file.txt", "caf\u00e9", "x" * 99, "p/" * 60 + "leaf", "nul\udcffbyte", ""]


Parser = Callable[[bytes], HeaderFields | None]


@pytest.fixture
def native(require_accel: Callable[[object, str], Parser]) -> Parser:
    return require_accel(tarstream.native_parse_header, "parse_header")


def _read_all(data: bytes) -> list[tuple[object, ...]] | str:
    """Every entry of `data` with all its fields (payloads consumed), or the error the reader raised."""
    out: list[tuple[object, ...]] = []
    try:
        reader = TarReader(io.BytesIO(data))
        for entry in reader:
            out.append((*(getattr(entry, slot) for slot in TarEntry.__slots__), reader.index))
            if entry.sparse is None and entry.size < 1 << 20:
                out.append(("payload", reader.read_payload()))
    except InvalidArchive as exc:
        return f"InvalidArchive: {exc}"
    return out


def _both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    with_native = _read_all(data)
    with monkeypatch.context() as patch:
        patch.setattr(tarstream, "native_parse_header", None)
        patch.setattr(tarstream, "native_parse_pax", None)
        python = _read_all(data)
    return with_native, python


def _tarfile_archive(rng: random.Random, fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for _ in range(rng.randrange(1, 6)):
            info = tarfile.TarInfo(rng.choice(_NAMES) or "empty")
            info.type = rng.choice([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                    tarfile.CHRTYPE, tarfile.FIFOTYPE])
            info.mode = rng.choice([0o644, 0o755, 0o4755, 0o1777, 0o7777, 0])
            info.uid = rng.choice([0, 1000, 65534, 2**21 - 1, 2**21, 2**31])
            info.gid = rng.choice([0, 100, 2**21 - 1, 2**30])
            info.mtime = rng.choice([0, 1_700_000_000, 8**11 - 1, 8**11, 1_700_000_000.5])
            info.uname = rng.choice(["", "root", "r\u00f6\u00f6t", "u" * 31, "u" * 40])
            info.gname = rng.choice(["", "wheel"])
            info.linkname = rng.choice(["", "target", "l" * 100, "l" * 101])
            info.devmajor, info.devminor = rng.choice([(0, 0), (8, 1), (2**21, 3)])
            data = bytes(rng.randrange(3) * 700) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except ValueError:  # a value this format cannot hold
                continue
    return buf.getvalue()


def _mutated(rng: random.Random, data: bytes) -> bytes:
    """`data` with one byte of one header field changed; the checksum fixed up or not."""
    blocks = bytearray(data)
    starts = [pos for pos in range(0, len(blocks) - 512, 512) if checksum_ok(bytes(blocks[pos : pos + 512]))]
    if not starts:
        return data
    pos = rng.choice(starts)
    start, width = rng.choice((*_NUMBERS, (148, 8), (257, 8), (345, 12), (156, 1)))
    blocks[pos + start + rng.randrange(width)] = rng.choice(_ALPHABET + b"0ugKLxgS")
    if start != 148 and rng.random() < 0.8:
        blocks[pos + 148 : pos + 156] = b" " * 8
        checksum = sum(blocks[pos : pos + 512])
        blocks[pos + 148 : pos + 156] = rng.choice([b"%06o\x00 ", b"%07o\x00", b"  %05o \x00", b"%o"]) % checksum
        blocks[pos + 148 : pos + 156] = bytes(blocks[pos + 148 : pos + 156]).ljust(8, b" ")[:8]
    return bytes(blocks)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_random_archives_read_the_same_with_and_without_the_native_decoder(
    fmt: int, native: Parser, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261207 + fmt)
    taken = left = 0
    for round_ in range(600):
        data = _tarfile_archive(rng, fmt)
        if round_ % 2:
            data = _mutated(rng, data)
        for pos in range(0, len(data) - 511, 512):
            block = data[pos : pos + 512]
            if checksum_ok(block):
                if native(block) is None:
                    left += 1
                else:
                    taken += 1
        native_result, python_result = _both_ways(data, monkeypatch)
        assert native_result == python_result, f"round {round_}"
    assert taken > 200 and left > 20, (taken, left)  # the decoder takes the common headers, and not all


@pytest.mark.parametrize(
    "case",
    [
        "base-256 uid",
        "v7 header",
        "gnu access time",
        "signed checksum",
        "leading spaces",
        "empty mode",
        "sign in size",
        "underscore in mtime",
    ],
)
def test_unusual_headers_are_left_to_python(case: str, native: Parser, monkeypatch: pytest.MonkeyPatch) -> None:
    block = bytearray(512)
    block[0:4] = b"file"
    block[100:108] = b"0000644\x00"
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = b"00000000000\x00"
    block[136:148] = b"14524770400\x00"
    block[156] = ord("0")
    block[257:265] = b"ustar\x0000"
    if case == "base-256 uid":
        block[108:116] = b"\x80\x00\x00\x00\x00\x00\x10\x00"
    elif case == "v7 header":
        block[257:265] = bytes(8)
    elif case == "gnu access time":
        block[257:265] = b"ustar  \x00"
        block[345:357] = b"14524770400\x00"
    elif case == "signed checksum":
        block[265:270] = b"\xe9\xe9\xe9\xe9\xe9"  # uname bytes >= 0x80: the signed sum differs
    elif case == "leading spaces":
        block[100:108] = b"    644 "
    elif case == "empty mode":
        block[100:108] = bytes(8)
    elif case == "sign in size":
        block[124:136] = b"+0000000000\x00"
    elif case == "underscore in mtime":
        block[136:148] = b"1452_770400\x00"
    block[148:156] = b" " * 8
    if case == "signed checksum":
        signed = sum(b - 256 if b >= 0x80 else b for b in block)
        block[148:156] = b"%06o\x00 " % signed
    else:
        block[148:156] = b"%06o\x00 " % sum(block)
    header = bytes(block)
    assert native(header) is None
    data = header + bytes(1024)
    native_result, python_result = _both_ways(data, monkeypatch)
    assert native_result == python_result


def test_common_headers_are_decoded_natively(native: Parser) -> None:
    info = tarfile.TarInfo("p/" * 60 + "leaf")
    info.mode, info.uid, info.gid, info.mtime, info.size = 0o4755, 1000, 100, 1_700_000_000, 5
    info.uname, info.gname = "r\u00f6\u00f6t", "wheel"
    header = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")[:512]
    assert native(header) == (
        ord("0"), "p/" * 60 + "leaf", 5, 0o4755, 1000, 100, 1_700_000_000, "", "r\u00f6\u00f6t", "wheel"
    )
    assert header[345] != 0  # the name needed the ustar prefix
    raw = bytearray(header)
    raw[0:4] = b"\xff\xfeab"
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\x00 " % sum(raw)
    fields = native(bytes(raw))
    joined = bytes(raw[345:500]).rstrip(b"\x00") + b"/" + bytes(raw[0:100]).rstrip(b"\x00")
    assert fields is not None and os.fsencode(fields[1]) == joined and "\udcff\udcfeab" in fields[1]


_PAX_KEYS = [b"path", b"linkpath", b"uname", b"gname", b"mtime", b"size", b"SCHILY.xattr.user.a", b"GNU.sparse.offset",
             b"GNU.sparse.numbytes", b"GNU.sparse.size", b"k", b"", b"a=b", b"nul\x00key"]
_PAX_VALUES = [b"", b"x", b"1700000000.5", b"a\x00b", b"caf\xc3\xa9", b"\xff", b"=", b"line\nbreak"]


def _pax_data(rng: random.Random) -> bytes:
    """Random pax records, some malformed by one byte, some followed by NUL padding."""
    records = []
    for _ in range(rng.randrange(0, 5)):
        body = rng.choice(_PAX_KEYS) + (b"=" if rng.random() < 0.95 else b"") + rng.choice(_PAX_VALUES)
        length = len(body) + 2 + len(str(len(body) + 2))
        length = len(b"%d %s\n" % (length, body))  # one more digit when the length gained one
        records.append(b"%d %s\n" % (length, body))
    data = b"".join(records)
    if data and rng.random() < 0.3:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.choice(b"0 9=\n\x00+-")]) + data[at + 1 :]
    if rng.random() < 0.1:
        data += bytes(rng.randrange(1, 20))
    return data


def test_pax_records_parse_natively_as_in_python_or_are_left_to_it(
    require_accel: Callable[[object, str], Callable[[bytes], dict[bytes, bytes] | None]],
) -> None:
    native_pax = require_accel(tarstream.native_parse_pax, "parse_pax")
    rng = random.Random(20261207)
    taken = left = 0
    for _ in range(20_000):
        data = _pax_data(rng)
        records = native_pax(data)
        if records is None:
            left += 1
            continue
        taken += 1
        assert list(records.items()) == list(parse_pax(data, nul_padding=True).items()), data
    assert taken > 2000 and left > 2000, (taken, left)  # it parses the plain records, and not all


@pytest.mark.parametrize(
    "data",
    [
        b"30 GNU.sparse.offset=0\n",
        b"14 path=a\x00b\n",
        b"+9 path=a\n",
        b"9 path=a",
        b"9 path a\n",
        b"7 =abc\n",
        b"11 nul\x00k=v\n",
    ],
    ids=["sparse-pair", "nul-in-path", "signed-length", "no-newline", "no-equals", "no-key", "nul-in-key"],
)
def test_unusual_pax_records_are_left_to_python(
    data: bytes, require_accel: Callable[[object, str], Callable[[bytes], dict[bytes, bytes] | None]]
) -> None:
    assert require_accel(tarstream.native_parse_pax, "parse_pax")(data) is None
