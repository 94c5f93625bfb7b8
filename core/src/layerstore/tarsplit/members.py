"""Which member a tar header block starts, as Go's ``archive/tar`` reports it to tar-split.

`Members` follows the extension headers (pax ``x`` and ``g``, GNU long names
``L``/``K``) that precede a member and applies them when the member's own
header comes: its name (GNU long name, pax ``path``, ustar prefix), its
content size (pax ``size``; none for links, directories, devices, fifos) and
whether layer extraction writes that content to disk.  It also remembers the
paths seen, cleaned as Go cleans them, to find repeated members.  Methods
raise `ValueError` for what Go refuses; the recorder names the byte offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..archive.tarfields import field_bytes, parse_pax
from .headers import HEADER_ONLY_TYPES, clean_name, validate_pax

if TYPE_CHECKING:
    from .headers import TarHeader

__all__ = ["EXTENSION_TYPES", "TYPE_GNU_SPARSE", "Members", "display"]

TYPE_PAX: Final = ord("x")
TYPE_PAX_GLOBAL: Final = ord("g")
TYPE_GNU_LONGNAME: Final = ord("L")
TYPE_GNU_LONGLINK: Final = ord("K")
TYPE_GNU_SPARSE: Final = ord("S")

#: Header types whose data is an extension header, not a member's content.
EXTENSION_TYPES: Final = frozenset((TYPE_PAX, TYPE_PAX_GLOBAL, TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK))

_TYPE_REGA: Final = 0
_TYPE_GNU_DUMPDIR: Final = ord("D")
_TYPE_GNU_VOLUME: Final = ord("V")
_WHITEOUT: Final = b".wh."
_WHITEOUT_META: Final = b".wh..wh."
_SPARSE_PAX_PREFIX: Final = b"GNU.sparse."


def display(name: bytes) -> str:
    """A member name for messages (bytes that are not UTF-8 shown as escapes)."""
    return name.decode("utf-8", "backslashreplace")


class Members:
    """The state between a member's extension headers and its header, and the member paths seen so far."""

    def __init__(self) -> None:
        #: Whether header blocks were seen that still wait for their member (extension headers, a sparse map).
        self.waiting = False
        self._long_name = b""
        self._pax: dict[bytes, bytes] | None = None
        #: The member paths seen so far, cleaned (`clean_name`); the native segmenter adds to it too.
        self.seen: set[bytes] = set()

    def _done(self) -> None:
        self._long_name = b""
        self._pax = None
        self.waiting = False

    def extension(self, typeflag: int, header_name: bytes, data: bytes) -> bytes | None:
        """Take the data of an extension header of type `typeflag` (one of `EXTENSION_TYPES`).

        A global pax header is a member of its own (as in Go): its name (pax
        ``path``, else `header_name`) is returned; else None.  Raises
        `ValueError` for malformed or invalid pax records.
        """
        if typeflag == TYPE_GNU_LONGNAME:
            self._long_name = field_bytes(data)
            return None
        if typeflag == TYPE_GNU_LONGLINK:
            return None
        records = parse_pax(data)
        validate_pax(records)
        if typeflag == TYPE_PAX:
            self._pax = records
            return None
        name = records.get(b"path") or header_name
        self._done()
        return name

    def member(self, header: TarHeader) -> tuple[bytes, int, bool]:
        """The name and content size of the member `header` starts, and whether its content stays in the segments.

        Content stays in the segments (no file entry size) for sparse members
        and for content extraction does not write (`not_extracted`, GNU dump
        directories and volume labels).  Raises `ValueError` for a negative size.
        """
        typeflag = header.typeflag
        name = header.name
        size = header.size
        sparse = typeflag == TYPE_GNU_SPARSE
        pax = self._pax
        if pax is not None:
            if pax.get(b"path"):
                name = pax[b"path"]
            if pax.get(b"size"):
                size = int(pax[b"size"])
            if any(key.startswith(_SPARSE_PAX_PREFIX) for key in pax):
                sparse = True
                name = pax.get(b"GNU.sparse.name") or name
        if self._long_name:
            name = self._long_name
        self._done()
        if typeflag in HEADER_ONLY_TYPES or (typeflag == _TYPE_REGA and name.endswith(b"/")):
            size = 0
        elif size < 0:
            raise ValueError(f"{display(name)!r} has negative size {size}")
        inline = sparse or typeflag in (_TYPE_GNU_DUMPDIR, _TYPE_GNU_VOLUME) or not_extracted(name)
        return name, size, inline

    def old_gnu_sparse(self, header: TarHeader) -> bytes:
        """The name of the old-GNU sparse member `header` starts, once its extension blocks have passed."""
        name = self._long_name or header.name
        self._done()
        return name

    def first(self, name: bytes) -> bool:
        """Whether no earlier member had the path `name` (tar-split allows one file entry per path); remember it."""
        key = clean_name(name)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def not_extracted(name: bytes) -> bool:
    """Whether layer extraction leaves this member's content off the disk (whiteouts, opaque markers, AUFS metadata)."""
    if _WHITEOUT not in name:
        return False
    parts = [p for p in name.split(b"/") if p and p != b"."]
    return bool(parts) and (parts[-1].startswith(_WHITEOUT) or any(p.startswith(_WHITEOUT_META) for p in parts))
