"""The tar-split metadata format: entries, and their gzip-compressed JSON lines.

A tar-split file (``tar-data.json.gz``) is a gzip stream of JSON objects, one
per line, as written by vbatts/tar-split's ``storage.NewJSONPacker``::

    {"type":2,"payload":"<base64 raw bytes>","position":0}
    {"type":1,"name":"etc/passwd","size":1234,"payload":"<base64 CRC-64>","position":1}

- ``type`` 2 (segment): ``payload`` holds raw archive bytes that are not file
  content (headers, extension headers, padding, end-of-archive blocks,
  trailing bytes), written back verbatim on reassembly.
- ``type`` 1 (file): one per archive entry of every kind, named as the tar
  reports it after extension headers (``name``; ``name_raw`` with base64 bytes
  when the name is not valid UTF-8); ``size`` is the content length (omitted
  when 0) and ``payload`` the 8-byte big-endian CRC-64/GO-ISO of the content
  (``null`` when there is no content).
- ``position`` counts the entries from 0; readers ignore it.

The writer produces exactly the bytes Go's ``encoding/json`` encoder does for
these objects (key order, ``omitempty``, HTML-safe escapes), so our metadata
and the Go tool's are line-for-line comparable.  The reader accepts what every
tar-split version wrote, including Docker 1.8-era files whose file entries
have no name and older files with an empty trailing segment.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Final, TypeAlias, cast

import attrs

from ..errors import CorruptMetadata
from .crc64 import CRC64_SIZE

if TYPE_CHECKING:
    from typing import BinaryIO

# ISA-L (python-isal) is several times faster than zlib and writes the same gzip format.
from isal import igzip, isal_zlib

__all__ = [
    "MAX_LINE",
    "Entry",
    "EntryType",
    "EntryWriter",
    "Record",
    "encode_entry",
    "iter_entries",
    "iter_records",
]

#: Longest metadata line the reader accepts.  Writers put at most 1 MiB of raw
#: bytes (1.4 MB of base64) in one segment; anything far beyond is not tar-split.
MAX_LINE: Final = 64 * 1024 * 1024

_WRITE_BATCH: Final = 256 * 1024
_LEVEL: Final = 1  # ISA-L levels are 0-3; 1 is fast and still compresses base64 well
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)  # its stub calls it an instance

# Go's encoder escapes these even though JSON does not require it.
_GO_ESCAPES: Final = re.compile("[<>&\u2028\u2029]")
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class EntryType(enum.IntEnum):
    """Kind of a tar-split entry (the ``type`` field)."""

    FILE = 1
    """Content of one archive member: name, size and CRC-64; bytes come from the layer."""
    SEGMENT = 2
    """Raw archive bytes stored in the metadata itself."""


@attrs.frozen
class Entry:
    """One line of tar-split metadata.

    ``name`` is the member name as raw bytes (tar names are bytes; most are
    UTF-8).  ``payload`` is the raw bytes of a segment, or the 8-byte CRC of a
    file's content (None when the file entry has no content).
    """

    type: EntryType
    name: bytes = b""
    size: int = 0
    payload: bytes | None = None
    position: int = 0

    @property
    def path(self) -> str:
        """The member name as a str; bytes that are not UTF-8 become surrogate escapes (``os.fsdecode``)."""
        return os.fsdecode(self.name)


def _go_json_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    return _GO_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_entry(entry: Entry) -> bytes:
    """Return the JSON line (with its newline) that Go's tar-split writes for ``entry``."""
    parts = ['{"type":', str(int(entry.type))]
    if entry.name:
        try:
            text = entry.name.decode("utf-8")
        except UnicodeDecodeError:
            parts += [',"name_raw":"', _b64(entry.name), '"']
        else:
            parts += [',"name":', _go_json_string(text)]
    if entry.size:
        parts += [',"size":', str(entry.size)]
    if entry.payload is None:
        parts.append(',"payload":null')
    else:
        parts += [',"payload":"', _b64(entry.payload), '"']
    parts += [',"position":', str(entry.position), "}\n"]
    return "".join(parts).encode("utf-8")


_b2a_base64 = binascii.b2a_base64
# Names of printable ASCII without the characters Go's encoder escapes (", \, <, >, &):
# their JSON string is the name itself between quotes.
_PLAIN_NAME: Final = re.compile(rb"[\x20\x21\x23-\x25\x27-\x3b\x3d\x3f-\x5b\x5d-\x7e]+").fullmatch
_SEGMENT_LINE: Final = b'{"type":2,"payload":"%b","position":%d}\n'
_FILE_LINE: Final = b'{"type":1,"name":"%b","size":%d,"payload":"%b","position":%d}\n'
_EMPTY_FILE_LINE: Final = b'{"type":1,"name":"%b","payload":null,"position":%d}\n'


class EntryWriter:
    """Writes entries as gzip-compressed JSON lines to a binary stream it does not own.

    Positions are assigned in order.  Call `close` once to write the gzip
    trailer; the stream itself stays open.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._compressor = isal_zlib.compressobj(_LEVEL, isal_zlib.DEFLATED, 31)  # 31: gzip container
        self._pending = bytearray()
        self._position = 0
        self.closed = False

    def add(self, type: EntryType, *, name: bytes = b"", size: int = 0, payload: bytes | None = None) -> int:
        """Append one entry and return its position."""
        position = self._position
        self._pending += encode_entry(Entry(type, name, size, payload, position))
        self._position = position + 1
        if len(self._pending) >= _WRITE_BATCH:
            self._drain()
        return position

    @property
    def position(self) -> int:
        """The position the next entry gets."""
        return self._position

    def add_lines(self, lines: bytes, position: int) -> None:
        """Append entry lines already encoded for the positions from `position` up to the new `position` (excluded)."""
        self._position = position
        pending = self._pending
        pending += lines
        if len(pending) >= _WRITE_BATCH:
            self._drain()

    def add_segment(self, payload: bytes | bytearray) -> None:
        """Append a segment entry holding the raw bytes ``payload`` (same line as `add`, faster)."""
        position = self._position
        self._position = position + 1
        pending = self._pending
        pending += _SEGMENT_LINE % (_b2a_base64(payload, newline=False), position)
        if len(pending) >= _WRITE_BATCH:
            self._drain()

    def add_file(self, name: bytes, size: int = 0, crc: bytes | None = None) -> None:
        """Append a file entry (same line as `add`, faster for the common plain-ASCII names)."""
        position = self._position
        self._position = position + 1
        pending = self._pending
        if _PLAIN_NAME(name) is None or (crc is None) == bool(size):
            pending += encode_entry(Entry(EntryType.FILE, name, size, crc, position))
        elif crc is None:
            pending += _EMPTY_FILE_LINE % (name, position)
        else:
            pending += _FILE_LINE % (name, size, _b2a_base64(crc, newline=False), position)
        if len(pending) >= _WRITE_BATCH:
            self._drain()

    def _drain(self) -> None:
        compressed = self._compressor.compress(bytes(self._pending))
        self._pending.clear()
        if compressed:
            self._out.write(compressed)

    def close(self) -> None:
        """Write everything buffered and the gzip trailer, then flush the stream."""
        if self.closed:
            return
        self.closed = True
        self._drain()
        self._out.write(self._compressor.flush())
        self._out.flush()


def _field(obj: dict[str, Any], key: str, kind: type, line_no: int) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CorruptMetadata(f"tar-split metadata line {line_no}: {key!r} is not an integer; re-import the layer")
    if kind is str and not isinstance(value, str):
        raise CorruptMetadata(f"tar-split metadata line {line_no}: {key!r} is not a string; re-import the layer")
    return value


def _b64decode(value: str, key: str, line_no: int) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptMetadata(
            f"tar-split metadata line {line_no}: {key!r} is not base64 ({exc}); re-import the layer"
        ) from None


#: One decoded line: (type, name, size, payload, position); `Entry` without the object overhead.
Record: TypeAlias = "tuple[int, bytes, int, bytes | None, int]"


def _decode_line(line: bytes, line_no: int) -> Record:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptMetadata(f"tar-split metadata line {line_no} is not JSON ({exc}); re-import the layer") from None
    if not isinstance(obj, dict):
        raise CorruptMetadata(f"tar-split metadata line {line_no} is not a JSON object; re-import the layer")
    raw_type = _field(obj, "type", int, line_no)
    try:
        entry_type = EntryType(raw_type)
    except ValueError:
        raise CorruptMetadata(
            f"tar-split metadata line {line_no}: unknown entry type {raw_type!r}; re-import the layer"
        ) from None
    name = b""
    name_raw = _field(obj, "name_raw", str, line_no)
    if name_raw:
        name = _b64decode(name_raw, "name_raw", line_no)
    else:
        text = _field(obj, "name", str, line_no) or ""
        # Go decodes a lone surrogate escape to U+FFFD; do the same instead of failing.
        name = _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")
    size = _field(obj, "size", int, line_no) or 0
    if size < 0:
        raise CorruptMetadata(f"tar-split metadata line {line_no}: negative size {size}; re-import the layer")
    payload_text = _field(obj, "payload", str, line_no)
    payload = None if payload_text is None else _b64decode(payload_text, "payload", line_no)
    position = _field(obj, "position", int, line_no) or 0
    if entry_type == EntryType.FILE and size and (payload is None or len(payload) != CRC64_SIZE):
        raise CorruptMetadata(
            f"tar-split metadata line {line_no}: file entry {name.decode('utf-8', 'backslashreplace')!r} "
            "has no valid CRC-64; re-import the layer"
        )
    return int(entry_type), name, size, payload, position


# Fast path: the exact lines Go's encoder (and `encode_entry`) writes -- fixed key
# order, no whitespace, names without escapes.  A line that matches decodes to the
# same record json.loads would give (the patterns admit only valid JSON: no
# control characters in strings, no leading zeros); every other line, and any
# line the fast path has doubts about, goes through `_decode_line`.
_JSON_INT = rb"(0|[1-9][0-9]*)"
_BASE64 = rb"([A-Za-z0-9+/]*={0,2})"
_FAST_FILE: Final = re.compile(
    rb'\{"type":1,"name":"([^"\\\x00-\x1f]+)",(?:"size":([1-9][0-9]*),)?"payload":(?:null|"'
    + _BASE64
    + rb'"),"position":'
    + _JSON_INT
    + rb"\}"
)
_SEGMENT_HEAD: Final = b'{"type":2,"payload":"'
_SEGMENT_TAIL: Final = b'","position":'
_READ_BLOCK: Final = 1024 * 1024
_a2b_base64 = binascii.a2b_base64


def _json_uint(text: bytes) -> int | None:
    # int() alone would also take spaces, underscores and leading zeros, which JSON does not.
    if text.isdigit() and (text[0] != 0x30 or len(text) == 1):  # 0x30: "0"
        return int(text)
    return None


def _decode_fast(line: bytes) -> Record | None:
    """Decode a line in the canonical layout, or return None to leave it to `_decode_line`."""
    try:
        if line.startswith(_SEGMENT_HEAD):
            # A segment line is mostly base64, which the strict decoder validates
            # faster than a regular expression could (a stray quote or escape is
            # not base64, so such a line falls through).
            tail = line.rfind(_SEGMENT_TAIL)
            if tail > 0 and line.endswith(b"}"):
                position = _json_uint(line[tail + len(_SEGMENT_TAIL) : -1])
                if position is not None:
                    return 2, b"", 0, _a2b_base64(line[len(_SEGMENT_HEAD) : tail], strict_mode=True), position
        elif line.startswith(b'{"type":1,'):
            m = _FAST_FILE.fullmatch(line)
            if m is not None:
                name, size_text, payload_text, position_text = m.groups()
                name.decode("utf-8")  # json.loads would refuse bytes that are not UTF-8
                payload = None if payload_text is None else _a2b_base64(payload_text, strict_mode=True)
                size = int(size_text) if size_text else 0
                if size and (payload is None or len(payload) != CRC64_SIZE):
                    return None
                return 1, name, size, payload, int(position_text)
    except (binascii.Error, ValueError):
        pass
    return None


def iter_records(metadata: BinaryIO | IO[bytes]) -> Iterator[Record]:
    """Like `iter_entries`, but yield plain ``(type, name, size, payload, position)`` tuples (faster)."""
    line_no = 0
    try:
        stream = cast("IO[bytes]", igzip.GzipFile(fileobj=metadata, mode="rb"))  # type: ignore[no-untyped-call]
        with stream:
            carry: list[bytes] = []  # the pieces of a line that continues in the next block
            carried = 0
            while True:
                block = stream.read(_READ_BLOCK)
                if not block:
                    break
                lines = block.split(b"\n")
                if len(lines) == 1:
                    carry.append(block)
                    carried += len(block)
                    if carried > MAX_LINE:
                        raise CorruptMetadata(f"tar-split metadata line {line_no + 1} is too long; re-import the layer")
                    continue
                if carry:
                    carry.append(lines[0])
                    lines[0] = b"".join(carry)
                    carry = []
                tail = lines.pop()
                carried = len(tail)
                if tail:
                    carry.append(tail)
                for line in lines:
                    line_no += 1
                    if len(line) >= MAX_LINE:  # MAX_LINE counts the newline
                        raise CorruptMetadata(f"tar-split metadata line {line_no} is too long; re-import the layer")
                    record = _decode_fast(line)
                    if record is None:
                        if not line or line.isspace():
                            continue
                        record = _decode_line(line, line_no)
                    yield record
                if carried > MAX_LINE:
                    raise CorruptMetadata(f"tar-split metadata line {line_no + 1} is too long; re-import the layer")
            if carry:
                line = b"".join(carry)
                line_no += 1
                if not line.isspace():
                    yield _decode_fast(line) or _decode_line(line, line_no)
    except (OSError, EOFError, zlib.error, _ISAL_ERROR) as exc:
        raise CorruptMetadata(
            f"tar-split metadata is not readable gzip after line {line_no} ({exc}); re-import the layer"
        ) from None


def iter_entries(metadata: BinaryIO | IO[bytes]) -> Iterator[Entry]:
    """Yield the entries of gzip-compressed tar-split metadata read from ``metadata``.

    Reads lazily (bounded memory).  Raises `CorruptMetadata` for anything that
    is not gzip-compressed tar-split JSON: bad or truncated gzip, bad JSON,
    wrong field types, unknown entry types, a file entry with content but
    without an 8-byte CRC.  Does not close ``metadata``.
    """
    for entry_type, name, size, payload, position in iter_records(metadata):
        yield Entry(EntryType(entry_type), name, size, payload, position)
