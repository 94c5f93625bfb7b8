"""The shared tar field decoders, checked against headers that Python's tarfile writes; both readers agree."""

from __future__ import annotations

import io
import tarfile

import pytest

from layerstore.archive.tarfields import (
    byte_sum,
    checksum_ok,
    field_bytes,
    field_text,
    parse_numeric,
    parse_pax,
    pax_integer,
    pax_time_ns,
)
from layerstore.archive.tarstream import TarReader
from layerstore.errors import InvalidArchive
from layerstore.tarsplit import disassemble, iter_entries


@pytest.mark.parametrize("value", [0, 1, 0o644, 0o7777777, 8**11 - 1, 8**11, 2**40, 2**62, -1, -1000, -(2**40)])
def test_numeric_fields_as_tarfile_writes_them(value: int) -> None:
    field = tarfile.itn(value, 12, tarfile.GNU_FORMAT)
    assert parse_numeric(field) == value


@pytest.mark.parametrize("field", [b"0000644\x00", b"  644 \x00\x00", bytes(8), b"644\x00junk"])
def test_octal_fields_trimmed_and_cut_at_nul(field: bytes) -> None:
    assert parse_numeric(field) == tarfile.nti(field)


@pytest.mark.parametrize("field", [b"0000648\x00", b"+000644\x00", b"\t644\x00\x00\x00\x00", b"0x1234\x00\x00"])
def test_malformed_numeric_fields_are_refused(field: bytes) -> None:
    with pytest.raises(ValueError, match="octal"):
        parse_numeric(field)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_checksums_of_tarfile_headers(fmt: int) -> None:
    info = tarfile.TarInfo("dir/\u00e9t\u00e9")
    info.size = 5
    info.uname = "user"
    block = info.tobuf(fmt, "utf-8", "surrogateescape")[-512:]
    assert checksum_ok(block)
    assert byte_sum(block) == sum(block)
    broken = bytearray(block)
    broken[0] ^= 1
    assert not checksum_ok(bytes(broken))


def test_a_signed_checksum_is_accepted() -> None:
    block = bytearray(tarfile.TarInfo("caf\u00e9").tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    unsigned, signed = tarfile.calc_chksums(bytes(block))
    assert unsigned != signed
    block[148:156] = b"%06o\x00 " % signed
    assert checksum_ok(bytes(block))


def test_pax_records_as_tarfile_writes_them() -> None:
    info = tarfile.TarInfo("x" * 300)
    info.pax_headers = {"mtime": "1700000000.5", "SCHILY.xattr.user.k": "v=w"}
    raw = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    size = tarfile.nti(raw[124:136])
    records = parse_pax(raw[512 : 512 + size])
    assert records[b"path"] == b"x" * 300
    assert records[b"mtime"] == b"1700000000.5"
    assert records[b"SCHILY.xattr.user.k"] == b"v=w"


def test_pax_sparse_pairs_are_kept_in_order() -> None:
    data = b"".join(
        b"%d %s\n" % (len(record) + 2 + len(str(len(record) + 3)), record)
        for record in (
            b"GNU.sparse.offset=0",
            b"GNU.sparse.numbytes=10",
            b"GNU.sparse.offset=4096",
            b"GNU.sparse.numbytes=5",
        )
    )
    assert parse_pax(data)[b"GNU.sparse.map"] == b"0,10,4096,5"


@pytest.mark.parametrize(
    "data",
    [b"30 mtime=1", b"x mtime=1\n", b"6 =1\n\n", b"9 mtime 1\n", b"14 path=a\x00b\n", b"\x00\x00\x00"],
)
def test_malformed_pax_records_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="pax record"):
        parse_pax(data)


def test_nul_padding_ends_the_records_only_when_allowed() -> None:
    data = b"12 mtime=17\n" + bytes(20)
    assert parse_pax(data, nul_padding=True) == {b"mtime": b"17"}
    with pytest.raises(ValueError):
        parse_pax(data)


@pytest.mark.parametrize(
    ("value", "ns"),
    [(b"12", 12_000_000_000), (b"-1.5", -1_500_000_000), (b"1.1234567899", 1_123_456_789), (b"+3.", 3_000_000_000)],
)
def test_pax_times(value: bytes, ns: int) -> None:
    assert pax_time_ns(value) == ns


@pytest.mark.parametrize("value", [b" 12", b"1e5", b".5", b"1.2.3", b""])
def test_malformed_pax_times_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="time"):
        pax_time_ns(value)


def test_pax_integers() -> None:
    assert pax_integer(b"-12") == -12
    assert pax_integer(b"+7") == 7
    for bad in (b"1_000", b" 1", b"9" * 20):
        with pytest.raises(ValueError):
            pax_integer(bad)


def test_string_fields() -> None:
    assert field_bytes(b"abc\x00def") == b"abc"
    assert field_bytes(b"abcdef") == b"abcdef"
    assert field_text(b"\x00abc") == ""
    assert field_text(b"caf\xc3\xa9\x00\x00") == "caf\u00e9"
    assert field_text(b"\xff\x00") == "\udcff"


def _tar(info: tarfile.TarInfo, fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    return out.getvalue()


def test_both_readers_take_a_negative_base256_mtime() -> None:
    info = tarfile.TarInfo("old")
    info.size = 3
    info.mtime = -1_000_000
    data = _tar(info, tarfile.GNU_FORMAT)
    (entry,) = list(TarReader(io.BytesIO(data)))
    assert entry.mtime_ns == -1_000_000 * 1_000_000_000
    metadata = io.BytesIO()
    disassemble(io.BytesIO(data), metadata)
    metadata.seek(0)
    assert [e.name for e in iter_entries(metadata) if e.name] == [b"old"]


def test_both_readers_refuse_a_bad_numeric_field() -> None:
    data = bytearray(_tar(tarfile.TarInfo("bad"), tarfile.GNU_FORMAT))
    data[108:116] = b"00009\x00\x00\x00"  # uid: not octal
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\x00 " % sum(data[:512])
    with pytest.raises(InvalidArchive, match="bad uid field"):
        list(TarReader(io.BytesIO(bytes(data))))
    with pytest.raises(InvalidArchive, match="invalid octal number"):
        disassemble(io.BytesIO(bytes(data)), io.BytesIO())
