"""The fast path of the metadata reader must decode exactly as the JSON path does, or step aside."""

from __future__ import annotations

import base64
import io
import json

import pytest
from isal import igzip

from layerstore.errors import CorruptMetadata
from layerstore.tarsplit import Entry, EntryType, encode_entry, iter_entries
from layerstore.tarsplit.format import MAX_LINE, _decode_fast, _decode_line, iter_records

CRC = bytes(range(8))

CANONICAL = [
    encode_entry(Entry(EntryType.SEGMENT, payload=b"\0" * 1024, position=0)),
    encode_entry(Entry(EntryType.SEGMENT, payload=b"", position=1)),
    encode_entry(Entry(EntryType.FILE, name=b"etc/passwd", size=1234, payload=CRC, position=2)),
    encode_entry(Entry(EntryType.FILE, name=b"dir/", position=3)),
    encode_entry(Entry(EntryType.FILE, name="caf\u00e9/\u00fc".encode(), size=1, payload=CRC, position=4)),
]

ODD = [
    b'{"type":2,"payload":"AAAA","position":00}',  # leading zero: not JSON
    b'{"type":2,"payload":"AA==","position":1} ',  # trailing space: JSON, not canonical
    b'{"type":2,"payload":"AA\\u003d\\u003d","position":1}',  # escapes
    b'{"type":2,"payload":"AAAA","name":"x","position":1}',  # extra key in between
    b'{"type":2,"payload":"AAA","position":1}',  # bad padding
    b'{"type":1,"name":"a\\"b","size":3,"payload":"AAECAwQFBgc=","position":1}',
    b'{"type":1,"name":"a<b","size":3,"payload":"AAECAwQFBgc=","position":1}',
    b'{"type":1,"name":"\xed\xa0\x80","size":3,"payload":"AAECAwQFBgc=","position":1}',  # UTF-8 surrogate
    b'{"type":1,"name":"\xff","size":3,"payload":"AAECAwQFBgc=","position":1}',  # not UTF-8
    b'{"type":1,"name":"a","size":3,"payload":null,"position":1}',  # content without CRC
    b'{"type":1,"name":"a","size":3,"payload":"AAEC","position":1}',  # short CRC
    b'{"type":1,"name":"a","size":0,"payload":null,"position":1}',
    b'{"type":1,"name":"a\tb","payload":null,"position":1}',  # control character
    b'{"type":1,"name_raw":"/w==","size":1,"payload":"AAECAwQFBgc=","position":1}',
    b'{"type":3,"payload":null,"position":1}',
]


def _slow(line: bytes) -> object:
    try:
        return _decode_line(line, 1)
    except CorruptMetadata as exc:
        return type(exc)


@pytest.mark.parametrize("line", [line.rstrip(b"\n") for line in CANONICAL])
def test_canonical_lines_take_the_fast_path(line: bytes) -> None:
    fast = _decode_fast(line)
    assert fast is not None
    assert fast == _slow(line)


@pytest.mark.parametrize("line", ODD)
def test_other_lines_are_left_to_the_json_reader(line: bytes) -> None:
    assert _decode_fast(line) is None or _decode_fast(line) == _slow(line)


def _gz(data: bytes) -> io.BytesIO:
    out = io.BytesIO()
    with igzip.GzipFile(fileobj=out, mode="wb") as f:  # type: ignore[no-untyped-call]
        f.write(data)
    return io.BytesIO(out.getvalue())


def test_lines_longer_than_a_read_block_and_blank_lines() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: its line spans several 1 MiB blocks
    lines = [
        encode_entry(Entry(EntryType.SEGMENT, payload=big, position=0)),
        b"\n",
        b"   \n",
        encode_entry(Entry(EntryType.FILE, name=b"f", size=3, payload=CRC, position=1)),
        b'{"type": 2, "payload": "' + base64.b64encode(b"xyz") + b'", "position": 2}',  # no final newline
    ]
    entries = list(iter_entries(_gz(b"".join(lines))))
    assert [e.payload for e in entries] == [big, CRC, b"xyz"]
    assert [e.name for e in entries] == [b"", b"f", b""]
    expected = [_decode_line(line.strip(), 1) for line in lines if line.strip()]
    assert list(iter_records(_gz(b"".join(lines)))) == expected


def test_a_line_over_the_limit_is_refused_without_reading_it_whole() -> None:
    line = b'{"type":2,"payload":"' + b"A" * (MAX_LINE + 8) + b'","position":0}\n'
    with pytest.raises(CorruptMetadata, match="line 2 is too long"):
        list(iter_records(_gz(json.dumps({"type": 2}).encode() + b"\n" + line)))
