"""Tar header blocks as the tar reader that tar-split embeds (Go's ``archive/tar``) reads them.

Which formats are recognised (v7, ustar/pax, star, GNU/oldgnu), which fields
of a header must be valid numbers, how the ustar or star prefix joins the
name, which pax records Go checks, and how Go cleans a name to find repeated
members.  The fields themselves are decoded by `layerstore.archive.tarfields`,
the rules every tar reader here shares.  Everything works on one 512-byte block
or one extension payload at a time and raises `ValueError` for what Go refuses;
the recorder turns that into an `InvalidArchive` naming the byte offset.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final

from ..archive.tarfields import PAX_TIME, PLAIN_OCTAL, checksum_ok, field_bytes, parse_numeric, pax_integer

__all__ = [
    "HEADER_ONLY_TYPES",
    "MAX_SPECIAL_SIZE",
    "TarHeader",
    "clean_name",
    "parse_header",
    "validate_pax",
]

#: Largest pax header or GNU long name/link payload accepted (the limit of Go and libarchive).
MAX_SPECIAL_SIZE: Final = 1 << 20

#: Type flags whose size field does not announce a data section.
HEADER_ONLY_TYPES: Final = frozenset(b"123456")  # hardlink, symlink, char, block, dir, fifo

_MAGIC_USTAR: Final = b"ustar\x00"
_MAGIC_GNU: Final = b"ustar "
_VERSION_GNU: Final = b" \x00"
_TRAILER_STAR: Final = b"tar\x00"
_FIELDS: Final = ((100, 108), (108, 116), (116, 124), (136, 148))  # mode, uid, gid, mtime
_DEVICE_FIELDS: Final = ((329, 337), (337, 345))  # devmajor, devminor
# The shapes GNU tar, Go, Python and libarchive write: mode, uid, gid, size and mtime (bytes 100-148)
# as zero-padded octal digits ending in a NUL (or a space and a NUL), and devmajor/devminor (329-345)
# the same or all NULs.  Every field these accept is one `PLAIN_OCTAL` accepts, so one match stands
# for the five (or two) field checks; anything else takes them one by one.
_COMMON_NUMBERS: Final = re.compile(rb"(?:[0-7]{6}[0-7 ]\x00){3}[0-7]{10}[0-7 ]\x00[0-7]{10}[0-7 ]\x00").fullmatch
_COMMON_DEVICES: Final = re.compile(rb"(?:[0-7]{6}[0-7 ]\x00|\x00{8}){2}").fullmatch


class TarHeader:
    """What the recorder needs from one header block."""

    __slots__ = ("name", "size", "typeflag")

    def __init__(self, typeflag: int, name: bytes, size: int) -> None:
        self.typeflag = typeflag
        self.name = name
        self.size = size


def parse_header(block: bytes) -> TarHeader:
    """Parse a non-zero 512-byte header block; raise `ValueError` when it is not a valid tar header.

    The name includes the ustar/star prefix; extension headers (pax, GNU long
    names) are applied by the caller.  ``size`` is the raw size field, which
    may be negative (base-256) and is checked by the caller for types with data.
    """
    if not checksum_ok(block):
        raise ValueError("bad header checksum (not a tar archive, or corrupt)")
    magic = block[257:263]
    typeflag = block[156]
    name = field_bytes(block[0:100])
    plain = PLAIN_OCTAL.fullmatch
    if _COMMON_NUMBERS(block, 100, 148):
        size = int(block[124:136].strip(b" \x00"), 8)
    else:
        if plain(block, 124, 136):
            digits = block[124:136].strip(b" \x00")
            size = int(digits, 8) if digits else 0
        else:
            size = parse_numeric(block[124:136])
        for start, end in _FIELDS:
            if not plain(block, start, end):
                parse_numeric(block[start:end])
    prefix = b""
    if magic == _MAGIC_USTAR:
        _check_device_fields(block)
        if block[508:512] == _TRAILER_STAR:
            prefix = field_bytes(block[345:476])
            parse_numeric(block[476:488])  # atime
            parse_numeric(block[488:500])  # ctime
        else:
            prefix = field_bytes(block[345:500])
    elif magic == _MAGIC_GNU and block[263:265] == _VERSION_GNU:
        _check_device_fields(block)
        try:
            if block[345]:
                parse_numeric(block[345:357])
            if block[357]:
                parse_numeric(block[357:369])
        except ValueError:
            # Writers from before Go 1.8 put a ustar prefix where GNU keeps atime/ctime.
            candidate = field_bytes(block[345:500])
            if candidate.isascii():
                prefix = candidate
    if prefix:
        name = prefix + b"/" + name
    return TarHeader(typeflag, name, size)


def _check_device_fields(block: bytes) -> None:
    """Raise `ValueError` when devmajor or devminor is not a valid number (Go checks them in ustar and GNU headers)."""
    if _COMMON_DEVICES(block, 329, 345) is None:
        for start, end in _DEVICE_FIELDS:
            if not PLAIN_OCTAL.fullmatch(block, start, end):
                parse_numeric(block[start:end])


def validate_pax(records: dict[bytes, bytes]) -> None:
    """Check the pax records Go's reader interprets (sizes, IDs, times); raise `ValueError` naming the bad one."""
    for key in (b"size", b"uid", b"gid"):
        value = records.get(key)
        if value:
            try:
                pax_integer(value)
            except ValueError:
                raise ValueError(f"invalid pax {key.decode()} {value!r}") from None
    for key in (b"mtime", b"atime", b"ctime"):
        value = records.get(key)
        if value and not PAX_TIME.fullmatch(value):  # what `pax_time_ns` reads, without computing it
            raise ValueError(f"invalid pax {key.decode()} {value!r}")


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
