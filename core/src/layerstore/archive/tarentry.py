"""One member of a tar archive as the archive reader hands it out, and the decoding of its fields.

`TarEntry` is what `layerstore.archive.tarstream.TarReader` yields.  The
functions here decode header fields and pax values with
`layerstore.archive.tarfields` and turn what it refuses into an
`InvalidArchive` that names the member: the archive reader's messages, where
the tar-split recorder names a byte offset instead.
"""

from __future__ import annotations

import base64
import os
import urllib.parse

from ..errors import InvalidArchive
from .tarfields import parse_numeric, pax_integer, pax_time_ns, text

__all__ = [
    "BLOCKDEV",
    "CHARDEV",
    "DIRECTORY",
    "FIFO",
    "HARDLINK",
    "REGULAR",
    "SYMLINK",
    "TarEntry",
    "apply_pax",
    "header_number",
    "pax_count",
    "pax_time",
]

REGULAR = "file"
DIRECTORY = "dir"
SYMLINK = "symlink"
HARDLINK = "hardlink"
CHARDEV = "char"
BLOCKDEV = "block"
FIFO = "fifo"


class TarEntry:
    """One member of a tar archive with its extended headers applied.

    `kind` is one of the module constants REGULAR, DIRECTORY, SYMLINK,
    HARDLINK, CHARDEV, BLOCKDEV, FIFO.  Names are `str`; bytes that are not
    UTF-8 are kept as surrogate escapes (``os.fsencode`` gives them back).
    Times are nanoseconds since the epoch; `atime_ns` is None when the archive
    does not carry one.  `xattrs` maps attribute names to raw values.  A
    sparse regular file has `sparse`, its data regions as (offset, length)
    pairs, and `size` is its logical size; else `sparse` is None.
    """

    __slots__ = (
        "atime_ns",
        "devmajor",
        "devminor",
        "gid",
        "gname",
        "kind",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "size",
        "sparse",
        "uid",
        "uname",
        "xattrs",
    )

    def __init__(self) -> None:
        self.name = ""
        self.kind = REGULAR
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0
        self.mtime_ns = 0
        self.atime_ns: int | None = None
        self.linkname = ""
        self.devmajor = 0
        self.devminor = 0
        self.uname = ""
        self.gname = ""
        self.xattrs: dict[str, bytes] = {}
        self.sparse: list[tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return f"<TarEntry {self.kind} {self.name!r} size={self.size}>"


def header_number(raw: bytes, what: str, name: str) -> int:
    """Decode the numeric header field `raw` (octal or base-256) of entry `name`; `what` names the field in errors.

    Beyond `parse_numeric`, the fast path takes whatever ``int(..., 8)`` reads
    once trailing spaces and NULs are cut (a sign, say); the tar-split
    recorder, reading the same bytes during an import, refuses those.
    """
    if raw[0] < 0x80:
        # Fast path for the usual "0000644\0" / "0012345\0 " fields.
        try:
            return int(raw.rstrip(b" \0"), 8)
        except ValueError:
            pass
    try:
        return parse_numeric(raw)
    except ValueError:
        raise InvalidArchive(f"corrupt tar header of entry {name!r}: bad {what} field {raw!r}") from None


def pax_count(value: bytes, what: str, name: str) -> int:
    """Decode a non-negative decimal pax value (a size, an ID, a sparse map number) of entry `name`."""
    try:
        number = pax_integer(value)
    except ValueError:
        raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad {what} {value!r}") from None
    if number < 0:
        raise InvalidArchive(f"corrupt pax header of entry {name!r}: negative {what}")
    return number


def pax_time(value: bytes, name: str) -> int:
    """Decode a pax time of entry `name` to nanoseconds since the epoch."""
    try:
        return pax_time_ns(value)
    except ValueError:
        raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad time {value!r}") from None


def apply_pax(
    entry: TarEntry, records: dict[bytes, bytes], name: str, linkname: str, size: int
) -> tuple[str, str, int]:
    """Apply pax `records` to `entry` (IDs, times, owner names, xattrs); return the name, link target and data size.

    An empty value leaves the header's value.  Extended attributes come from
    ``SCHILY.xattr.*`` (raw) and ``LIBARCHIVE.xattr.*`` (URL-encoded name,
    base64 value) records.
    """
    for key, value in records.items():
        if key == b"path":
            if value:
                name = text(value)
        elif key == b"linkpath":
            if value:
                linkname = text(value)
        elif key == b"size":
            if value:
                size = pax_count(value, "size", name)
        elif key == b"uid":
            if value:
                entry.uid = pax_count(value, "uid", name)
        elif key == b"gid":
            if value:
                entry.gid = pax_count(value, "gid", name)
        elif key == b"mtime":
            if value:
                entry.mtime_ns = pax_time(value, name)
        elif key == b"atime":
            if value:
                entry.atime_ns = pax_time(value, name)
        elif key == b"uname":
            entry.uname = text(value)
        elif key == b"gname":
            entry.gname = text(value)
        elif key.startswith(b"SCHILY.xattr."):
            entry.xattrs[text(key[13:])] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            attr = os.fsdecode(urllib.parse.unquote_to_bytes(key[17:]))
            try:
                entry.xattrs[attr] = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
            except ValueError:
                raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad xattr {attr!r}") from None
    if "\0" in name or "\0" in linkname:
        raise InvalidArchive(f"tar entry {name!r} has a NUL byte in its name or link target")
    return name, linkname, size
