"""Decoding the fields of tar header blocks and pax extended headers.

Every tar reader in layerstore decodes fields with these functions: the
archive reader that applies layers (`layerstore.archive.tarstream`) and the
tar-split recorder (`layerstore.tarsplit.recorder`); a driver that reads tar
headers itself should use them too.  What they accept is what Go's
``archive/tar`` accepts (the reader that tar-split embeds, and that Docker and
containers/storage use), so both readers read every field alike; where the
archive reader deliberately accepts more (NULs padding a pax header), a
parameter says so.  Each function raises `ValueError` with a short
description of what is wrong; the caller adds which member or which byte
offset, and raises its own `layerstore.errors.InvalidArchive`.

The functions take ``bytes`` (a header block is 512 of them); none keeps a
reference to its argument.
"""

from __future__ import annotations

import re
from typing import Final
from zlib import adler32

__all__ = [
    "BLOCK",
    "DECIMAL",
    "PAX_SPARSE_MAP",
    "PAX_TIME",
    "PLAIN_OCTAL",
    "byte_sum",
    "checksum_ok",
    "field_bytes",
    "field_text",
    "parse_numeric",
    "parse_octal",
    "parse_pax",
    "pax_integer",
    "pax_time_ns",
    "text",
]

#: Size of a tar block: a header, and the unit data is padded to.
BLOCK: Final = 512

#: The pax key under which `parse_pax` gathers the offset/size pairs of a GNU sparse 0.0 header.
PAX_SPARSE_MAP: Final = b"GNU.sparse.map"

_SPARSE_PAIR_KEYS: Final = frozenset((b"GNU.sparse.offset", b"GNU.sparse.numbytes"))
# Values of these pax keys are names: a NUL in them is an error, as in a key.
_NAME_KEYS: Final = frozenset((b"path", b"linkpath", b"uname", b"gname"))
_OCTAL: Final = re.compile(rb"[0-7]+")
_INT64_MAX: Final = (1 << 63) - 1

#: ``DECIMAL.fullmatch(value)`` tells a decimal pax value: an optional sign and ASCII digits.
DECIMAL: Final = re.compile(rb"[+-]?[0-9]+")

#: ``PAX_TIME.fullmatch(value)`` tells a valid pax time (what `pax_time_ns` reads); its groups are the sign,
#: the seconds and the fraction.
PAX_TIME: Final = re.compile(rb"([+-]?)([0-9]+)(?:\.([0-9]*))?")

#: ``PLAIN_OCTAL.fullmatch(block, start, end)`` tells a numeric field that is octal digits between spaces and
#: NULs: the usual case, valid for `parse_numeric`, and ``int(field.strip(b" \0") or b"0", 8)`` reads it.
PLAIN_OCTAL: Final = re.compile(rb"[ \x00]*[0-7]*[ \x00]*")


def text(raw: bytes) -> str:
    """Decode a name or other text from a header as UTF-8; bytes that are not UTF-8 become surrogate escapes.

    ``os.fsencode`` gives the exact bytes back.
    """
    return raw.decode("utf-8", "surrogateescape")


def field_bytes(field: bytes) -> bytes:
    """The value of a NUL-terminated string field: the bytes before the first NUL, the whole field without one."""
    end = field.find(0)
    return field if end < 0 else field[:end]


def field_text(field: bytes) -> str:
    """`field_bytes` decoded with `text`."""
    # Self-contained: called for several fields of every header (the per-entry hot path).
    if not field or not field[0]:
        return ""
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def parse_octal(field: bytes) -> int:
    """Read an octal numeric field: spaces and NULs around the digits are ignored, an empty field is 0.

    Raises `ValueError` for anything but octal digits, or a value of 2**64 or more.
    """
    digits = field_bytes(field.strip(b" \x00"))
    if not digits:
        return 0
    if not _OCTAL.fullmatch(digits):
        raise ValueError(f"invalid octal number {bytes(field)!r}")
    value = int(digits, 8)
    if value >= 1 << 64:
        raise ValueError(f"octal number out of range {bytes(field)!r}")
    return value


def parse_numeric(field: bytes) -> int:
    """Read a numeric field: octal text (`parse_octal`), or GNU base-256 when its first byte has the top bit set.

    Base-256 is a big-endian two's complement number whose top bit marks the
    encoding; bit 0x40 of the first byte is the sign, as GNU tar and Go read it.
    Raises `ValueError` for a malformed field or a value outside 64-bit signed integers.
    """
    first = field[0]
    if not first & 0x80:
        return parse_octal(field)
    value = int.from_bytes(field, "big")
    if first & 0x40:
        value -= 1 << (8 * len(field))
    else:
        value -= 1 << (8 * len(field) - 1)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError("base-256 number out of range")
    return value


def byte_sum(block: bytes | bytearray) -> int:
    """The sum of the bytes of a 512-byte block (what the header checksum adds up), computed in C.

    Adler-32's first component is 1 plus the byte sum modulo 65521; over 256
    bytes the sum is at most 65280, so each half's value is exact.
    """
    return (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2


def checksum_ok(block: bytes) -> bool:
    """Whether a 512-byte header block's checksum field matches its bytes.

    The checksum is the byte sum with the checksum field counted as spaces;
    the sum of signed bytes (old Sun tar) is accepted too.  A checksum field
    that is not octal (`parse_octal`) does not match.
    """
    field = block[148:156]
    digits = field.strip(b" \x00")
    if digits.isdigit():  # the usual case: ASCII digits only (int() would take signs, "_" and spaces too)
        try:
            recorded = int(digits, 8)
        except ValueError:  # an 8 or a 9
            return False
    else:
        try:
            recorded = parse_octal(field)
        except ValueError:
            return False
    unsigned = byte_sum(block) + 256 - sum(field)
    if recorded == unsigned:
        return True
    high = sum(1 for b in block if b >= 0x80) - sum(1 for b in field if b >= 0x80)
    return recorded == unsigned - 256 * high


def parse_pax(data: bytes, *, nul_padding: bool = False) -> dict[bytes, bytes]:
    """Parse the records (``"%d %s=%s\\n"``) of a pax extended header's data into a dict; a later record wins.

    The repeated ``GNU.sparse.offset`` and ``GNU.sparse.numbytes`` records of
    GNU sparse format 0.0 are kept all, in order, as one comma-separated value
    under `PAX_SPARSE_MAP` (as Go does).  Raises `ValueError` for a malformed
    record, a record without a key, or a NUL in a key or in the value of
    ``path``, ``linkpath``, ``uname`` or ``gname``.  With `nul_padding`, a NUL
    where a record would begin ends the data (some writers pad it with NULs;
    the archive reader accepts that, Go's reader does not).
    """
    records: dict[bytes, bytes] = {}
    check_nul = b"\x00" in data  # one scan of the whole data instead of one per record
    pos = 0
    end = len(data)
    while pos < end:
        if nul_padding and data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise ValueError("pax record without length")
        length_text = data[pos:space]
        if not length_text.isdigit() and not DECIMAL.fullmatch(length_text):
            raise ValueError(f"invalid pax record length {length_text!r}")
        length = int(length_text)
        if length < 5 or pos + length > end:
            raise ValueError(f"invalid pax record length {length}")
        record_end = pos + length
        if data[record_end - 1] != 0x0A:
            raise ValueError("pax record does not end with a newline")
        key, equals, value = data[space + 1 : record_end - 1].partition(b"=")
        if not key or not equals:
            raise ValueError("pax record without key")
        if check_nul and b"\x00" in (value if key in _NAME_KEYS else key):
            raise ValueError(f"NUL byte in pax record {key!r}")
        if key in _SPARSE_PAIR_KEYS:
            previous = records.get(PAX_SPARSE_MAP)
            records[PAX_SPARSE_MAP] = value if previous is None else previous + b"," + value
        else:
            records[key] = value
        pos = record_end
    return records


def pax_integer(value: bytes) -> int:
    """Read a decimal pax value (``size``, ``uid``, ``gid``, sparse maps).

    Accepts an optional sign and digits, within 64-bit signed integers; raises `ValueError` otherwise.
    """
    if not DECIMAL.fullmatch(value):
        raise ValueError(f"invalid number {value!r}")
    number = int(value)
    if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise ValueError(f"number out of range {value!r}")
    return number


def pax_time_ns(value: bytes) -> int:
    """Read a pax time (``mtime``, ``atime``, ``ctime``: seconds, optionally a fraction) as nanoseconds since the epoch.

    Digits beyond nanoseconds are dropped; a negative time is negative as a
    whole (``-1.5`` is 1.5 s before the epoch).  Raises `ValueError` for
    anything but an optional sign, digits, and an optional ``.`` with digits.
    """
    whole, _, fraction = value.partition(b".")
    if whole.isdigit() and (fraction.isdigit() or not fraction):  # the usual case, without a regex
        return int(whole) * 1_000_000_000 + int((fraction + b"000000000")[:9])
    match = PAX_TIME.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid time {value!r}")
    sign, whole, fraction = match.groups()
    ns = int(whole) * 1_000_000_000 + int(((fraction or b"") + b"000000000")[:9])
    return -ns if sign == b"-" else ns
