"""Parsing of single tar header blocks and extension-header data.

The rules follow the tar reader that tar-split embeds (Go's ``archive/tar``):
which formats are recognised (v7, ustar/pax, star, GNU/oldgnu), how numeric
fields are read (octal or base-256), how the member name is built (ustar
prefix, GNU long names, pax ``path``), and what counts as a malformed header.
Everything here works on one 512-byte block or one extension payload at a time.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final
from zlib import adler32

__all__ = [
    "BLOCK",
    "HEADER_ONLY_TYPES",
    "MAX_SPECIAL_SIZE",
    "HeaderError",
    "TarHeader",
    "byte_sum",
    "clean_name",
    "parse_header",
    "parse_pax",
    "parse_string",
    "validate_pax",
]

BLOCK: Final = 512

#: Largest pax header or GNU long name/link payload accepted (the limit of Go and libarchive).
MAX_SPECIAL_SIZE: Final = 1 << 20

#: Type flags whose size field does not announce a data section.
HEADER_ONLY_TYPES: Final = frozenset(b"123456")  # hardlink, symlink, char, block, dir, fifo

_MAGIC_USTAR: Final = b"ustar\x00"
_MAGIC_GNU: Final = b"ustar "
_VERSION_GNU: Final = b" \x00"
_TRAILER_STAR: Final = b"tar\x00"
_OCTAL: Final = re.compile(rb"[0-7]+")
_DECIMAL: Final = re.compile(rb"[+-]?[0-9]+")
_PAX_TIME: Final = re.compile(rb"[+-]?[0-9]+(\.[0-9]*)?")
_INT64_MAX: Final = (1 << 63) - 1
# A numeric field that is octal digits between spaces and NULs is valid and
# needs no closer look (checked with fullmatch on the field's byte range).
_PLAIN_OCTAL: Final = re.compile(rb"[ \x00]*[0-7]*[ \x00]*")
_FIELDS: Final = ((100, 108), (108, 116), (116, 124), (136, 148))  # mode, uid, gid, mtime
_DEVICE_FIELDS: Final = ((329, 337), (337, 345))  # devmajor, devminor


class HeaderError(ValueError):
    """A header block or extension payload is malformed."""


class TarHeader:
    """What the recorder needs from one header block."""

    __slots__ = ("name", "size", "typeflag")

    def __init__(self, typeflag: int, name: bytes, size: int) -> None:
        self.typeflag = typeflag
        self.name = name
        self.size = size


def parse_string(field: bytes) -> bytes:
    """Return a NUL-terminated field's value (the whole field when it has no NUL)."""
    end = field.find(0)
    return field if end < 0 else field[:end]


def _parse_octal(field: bytes) -> int:
    digits = parse_string(field.strip(b" \x00"))
    if not digits:
        return 0
    if not _OCTAL.fullmatch(digits):
        raise HeaderError(f"invalid octal number {bytes(field)!r}")
    value = int(digits, 8)
    if value >= 1 << 64:
        raise HeaderError(f"octal number out of range {bytes(field)!r}")
    return value


def _parse_numeric(field: bytes) -> int:
    first = field[0]
    if first & 0x80:
        # Base-256: two's complement, big-endian, the top bit only marks the encoding.
        negative = bool(first & 0x40)
        raw = bytearray(field)
        if negative:
            raw = bytearray(b ^ 0xFF for b in raw)
        raw[0] &= 0x7F
        value = int.from_bytes(raw, "big")
        if value > _INT64_MAX:
            raise HeaderError("base-256 number out of range")
        return -value - 1 if negative else value
    return _parse_octal(field)


def byte_sum(block: bytes) -> int:
    """The sum of the bytes of a 512-byte block (what tar's header checksum adds up), computed in C.

    Adler-32's first component is 1 plus the byte sum modulo 65521; over 256
    bytes the sum is at most 65280, so each half's value is exact.
    """
    return (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2


def _checksum_ok(block: bytes) -> bool:
    if _PLAIN_OCTAL.fullmatch(block, 148, 156):
        digits = block[148:156].strip(b" \x00")
        recorded = int(digits, 8) if digits else 0
    else:
        try:
            recorded = _parse_octal(block[148:156])
        except HeaderError:
            return False
    unsigned = byte_sum(block) - sum(block[148:156]) + 8 * 32
    if recorded == unsigned:
        return True
    # Old Sun tar summed signed bytes.
    high = sum(1 for b in block if b >= 0x80) - sum(1 for b in block[148:156] if b >= 0x80)
    return recorded == unsigned - 256 * high


def parse_header(block: bytes) -> TarHeader:
    """Parse a non-zero 512-byte header block; raise `HeaderError` when it is not a valid tar header.

    The name includes the ustar/star prefix; extension headers (pax, GNU long
    names) are applied by the caller.  ``size`` is the raw size field, which
    may be negative (base-256) and is checked by the caller for types with data.
    """
    if not _checksum_ok(block):
        raise HeaderError("bad header checksum (not a tar archive, or corrupt)")
    magic = block[257:263]
    typeflag = block[156]
    name = parse_string(block[0:100])
    plain = _PLAIN_OCTAL.fullmatch
    if plain(block, 124, 136):
        digits = block[124:136].strip(b" \x00")
        size = int(digits, 8) if digits else 0
    else:
        size = _parse_numeric(block[124:136])
    for start, end in _FIELDS:
        if not plain(block, start, end):
            _parse_numeric(block[start:end])
    prefix = b""
    if magic == _MAGIC_USTAR:
        for start, end in _DEVICE_FIELDS:
            if not plain(block, start, end):
                _parse_numeric(block[start:end])
        if block[508:512] == _TRAILER_STAR:
            prefix = parse_string(block[345:476])
            _parse_numeric(block[476:488])  # atime
            _parse_numeric(block[488:500])  # ctime
        else:
            prefix = parse_string(block[345:500])
    elif magic == _MAGIC_GNU and block[263:265] == _VERSION_GNU:
        for start, end in _DEVICE_FIELDS:
            if not plain(block, start, end):
                _parse_numeric(block[start:end])
        try:
            if block[345]:
                _parse_numeric(block[345:357])
            if block[357]:
                _parse_numeric(block[357:369])
        except HeaderError:
            # Writers from before Go 1.8 put a ustar prefix where GNU keeps atime/ctime.
            candidate = parse_string(block[345:500])
            if candidate.isascii():
                prefix = candidate
    if prefix:
        name = prefix + b"/" + name
    return TarHeader(typeflag, name, size)


def validate_pax(records: dict[bytes, bytes]) -> None:
    """Check the pax records Go's reader interprets (sizes, IDs, times); raise `HeaderError`."""
    for key in (b"size", b"uid", b"gid"):
        value = records.get(key)
        if value and (not _DECIMAL.fullmatch(value) or not -(1 << 63) <= int(value) <= _INT64_MAX):
            raise HeaderError(f"invalid pax {key.decode()} {value!r}")
    for key in (b"mtime", b"atime", b"ctime"):
        value = records.get(key)
        if value and not _PAX_TIME.fullmatch(value):
            raise HeaderError(f"invalid pax {key.decode()} {value!r}")


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse the records of a pax extended header (``"%d %s=%s\\n"``); raise `HeaderError`."""
    records: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        space = data.find(b" ", pos)
        if space < 0:
            raise HeaderError("pax record without length")
        length_text = data[pos:space]
        if not _DECIMAL.fullmatch(length_text):
            raise HeaderError(f"invalid pax record length {length_text!r}")
        length = int(length_text)
        if length < 5 or pos + length > end:
            raise HeaderError(f"invalid pax record length {length}")
        record_end = pos + length
        if data[record_end - 1] != 0x0A:
            raise HeaderError("pax record does not end with a newline")
        record = data[space + 1 : record_end - 1]
        equals = record.find(b"=")
        if equals <= 0:
            raise HeaderError("pax record without key")
        key, value = record[:equals], record[equals + 1 :]
        if b"\x00" in (value if key in (b"path", b"linkpath", b"uname", b"gname") else key):
            raise HeaderError(f"NUL byte in pax record {key!r}")
        records[key] = value
        pos = record_end
    return records


def clean_name(name: bytes) -> bytes:
    """Normalise a member name the way Go's ``filepath.Clean`` does (to detect duplicates)."""
    if not name:
        return b"."
    if not name.startswith((b".", b"/")) and not name.endswith(b"/") and b"//" not in name and b"/." not in name:
        return name  # no empty, "." or ".." component: already clean
    cleaned = posixpath.normpath(name)
    # normpath keeps a leading "//" (POSIX allows it to mean something); Clean does not.
    if cleaned.startswith(b"//"):
        cleaned = b"/" + cleaned.lstrip(b"/")
    return cleaned
