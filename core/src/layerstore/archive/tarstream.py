"""A streaming reader of tar archives for applying layers.

It parses headers itself (ustar, GNU and old-GNU, v7, pax with global
headers, GNU long names and links, base-256 numbers, sparse files) and hands
out one `TarEntry` at a time; the caller copies the payload of the current
entry to a file descriptor or leaves it, and the reader skips what was not
consumed.  After the end-of-archive block it reads the stream to its end; an
archive that ends right after its last entry, without end-of-archive blocks,
or with a single zero block, is complete too (as Go's ``archive/tar`` reads
it).  Every malformation is an `InvalidArchive` naming the entry when it is
known.  Fields are decoded by `layerstore.archive.tarfields` (shared with the
tar-split recorder), sparse maps by `layerstore.archive.tarsparse`.  When the
optional ``layerstore-accel`` is installed, a header of the common shape is
decoded by its `native_parse_header` in one call instead, and the records of
a pax header by its `native_parse_pax`; they leave every other header and
record set to the code here, so the entries and errors are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, Final

from ..errors import InvalidArchive
from . import _accel
from .tarbuffer import TarInput
from .tarentry import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    TarEntry,
    apply_pax,
    header_number,
)
from .tarfields import BLOCK, checksum_ok, field_bytes, field_text, parse_pax, text
from .tarsparse import check_regions, old_gnu_map, pax_sparse, read_v1_map

__all__ = [
    "BLOCK",
    "BLOCKDEV",
    "CHARDEV",
    "DIRECTORY",
    "FIFO",
    "HARDLINK",
    "REGULAR",
    "SYMLINK",
    "TarEntry",
    "TarReader",
]

_MAX_META: Final = 64 << 20  # pax headers and GNU long names larger than this are refused
_ZERO_BLOCK: Final = bytes(BLOCK)

_KINDS: Final[dict[int, str]] = {
    0x30: REGULAR,  # '0'
    0x00: REGULAR,  # old '\0'
    0x37: REGULAR,  # '7' contiguous file
    0x31: HARDLINK,
    0x32: SYMLINK,
    0x33: CHARDEV,
    0x34: BLOCKDEV,
    0x35: DIRECTORY,
    0x36: FIFO,
    0x44: DIRECTORY,  # 'D' GNU dump directory: a directory whose payload lists names
}
_PAX_LOCAL: Final = (0x78, 0x58)  # 'x', Solaris 'X'
_PAX_GLOBAL: Final = 0x67  # 'g'
_GNU_LONGNAME: Final = 0x4C  # 'L'
_GNU_LONGLINK: Final = 0x4B  # 'K'
_GNU_SPARSE: Final = 0x53  # 'S'
_GNU_VOLUME: Final = 0x56  # 'V'
_USTAR_MAGIC: Final = b"ustar\x00"
_GNU_MAGIC: Final = b"ustar  \x00"

#: The native decoder of common headers (``layerstore_accel.parse_header``), or None.  It gives the values this
#: module's own decoding gives, and None for every header it leaves to that decoding.
native_parse_header = _accel.parse_header
#: The native parser of pax records (``layerstore_accel.parse_pax``), or None; None from it: parsed here.
native_parse_pax = _accel.parse_pax


class TarReader(TarInput):
    """Iterate over the entries of an uncompressed tar stream, read strictly sequentially.

    Use ``for entry in reader:``; while an entry is current, `copy_to` (or
    `copy_sparse_to` for an entry with `TarEntry.sparse`) writes its payload to
    a file descriptor.  Unread payload is skipped when the next entry is
    requested.  The stream is read to its end after the archive's
    end-of-archive block.  `index` is the position of the current entry among
    tar-split's file entries (global headers and volume labels count).
    """

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__(stream)
        self._global: dict[bytes, bytes] = {}
        self._count = 0
        self.finished = False
        self.index = -1

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            entry = self.next()
            if entry is None:
                return
            yield entry

    def _payload(self, size: int, name: str) -> bytes:
        if size > _MAX_META:
            raise InvalidArchive(f"tar extension header before entry {name!r} is too large ({size} bytes)")
        pos = self._pos
        padded = size + (-size) % BLOCK
        if self._end - pos >= padded:  # the usual case: data and padding are in the buffer
            self._pos = pos + padded
            return bytes(self._view[pos : pos + size])
        data = self._read_exact(size, f"extension header after entry {name!r}")
        pad = (-size) % BLOCK
        if pad:
            self._read_exact(pad, f"extension header after entry {name!r}")
        return data

    def _pax_records(self, size: int, last: str) -> dict[bytes, bytes]:
        data = self._payload(size, last)
        if native_parse_pax is not None:
            records = native_parse_pax(data)
            if records is not None:
                return records
        try:
            return parse_pax(data, nul_padding=True)
        except ValueError as exc:
            raise InvalidArchive(f"corrupt pax header before entry {last!r}: {exc}") from None

    # -- header fields decoded in Python (what `native_parse_header` leaves) --

    def _decode_start(self, header: bytes, last: str) -> tuple[int, str, int]:
        """Check the checksum of `header` and decode its type flag, name (with the ustar prefix) and size."""
        if not checksum_ok(header):
            if self._count == 1:
                raise InvalidArchive(
                    "not a tar archive (no valid tar header at the start); "
                    "a layer must be a tar, optionally gzip, bzip2, xz or zstd compressed"
                )
            raise InvalidArchive(f"corrupt tar archive: bad header checksum after entry {last!r}")
        raw_name = field_bytes(header[0:100])
        if header[257:263] == _USTAR_MAGIC and header[345] != 0:
            raw_name = field_bytes(header[345:500]) + b"/" + raw_name
        name = text(raw_name)
        size = header_number(header[124:136], "size", name)
        if size < 0:
            raise InvalidArchive(f"corrupt tar header of entry {name!r}: negative size")
        return header[156], name, size

    @staticmethod
    def _decode_rest(entry: TarEntry, header: bytes, kind: str, name: str) -> str:
        """Decode mode, IDs, times, owner names and device numbers of `header` into `entry`; return its link target."""
        try:
            # `header_number`'s fast path, inlined for the usual octal fields; anything else takes the general one.
            mode = int(header[100:108].rstrip(b" \0"), 8)
            uid = int(header[108:116].rstrip(b" \0"), 8)
            gid = int(header[116:124].rstrip(b" \0"), 8)
            mtime = int(header[136:148].rstrip(b" \0"), 8)
        except ValueError:
            mode = header_number(header[100:108], "mode", name)
            uid = header_number(header[108:116], "uid", name)
            gid = header_number(header[116:124], "gid", name)
            mtime = header_number(header[136:148], "mtime", name)
        entry.mode = mode & 0o7777
        entry.uid = uid
        entry.gid = gid
        entry.mtime_ns = mtime * 1_000_000_000
        magic = header[257:263]
        if magic == _USTAR_MAGIC or magic == _GNU_MAGIC[:6]:
            entry.uname = field_text(header[265:297])
            entry.gname = field_text(header[297:329])
            if kind is CHARDEV or kind is BLOCKDEV:
                entry.devmajor = header_number(header[329:337], "devmajor", name)
                entry.devminor = header_number(header[337:345], "devminor", name)
            if header[257:265] == _GNU_MAGIC and header[345] != 0:
                atime = header_number(header[345:357], "atime", name)
                if atime:
                    entry.atime_ns = atime * 1_000_000_000
        return field_text(header[157:257])

    # -- entries -----------------------------------------------------------

    def take_run(self, take: Callable[..., _accel.PlainRun | None], *context: object) -> _accel.PlainRun | None:
        """Let `take` consume a run of whole members from the buffer at the next header; return its result.

        `take` is called as ``take(buffer, pos, end, index, *context)`` (see
        ``layerstore_accel.take_plain_files``) and answers None when it took
        nothing.  Only between entries, with no payload left and no global pax
        records (they would apply to the members taken); the reader's position,
        member number and the name its messages use then move past the run.
        """
        if self._remaining or self._padding or self._global or self.finished:
            return None
        run = take(self._view, self._pos, self._end, self.index, *context)
        if run is None:
            return None
        pos, count, _, _, last = run
        self._pos = pos
        self.index += count
        self._count += count
        self._current = last
        return run

    def next(self) -> TarEntry | None:
        """Return the next entry, or None after the end of the archive (the stream is then read to its end)."""
        if self.finished:
            return None
        if self._remaining or self._padding:
            self.skip()
        local: dict[bytes, bytes] | None = None
        long_name: str | None = None
        long_link: str | None = None
        last = self._current
        parse = native_parse_header
        while True:
            pos = self._pos
            if self._end - pos >= BLOCK:
                self._pos = pos + BLOCK
                header = bytes(self._view[pos : pos + BLOCK])
            else:
                header = self._take(BLOCK)
            if len(header) != BLOCK:
                if self._count == 0:
                    raise InvalidArchive(
                        "not a tar archive (the input is empty or shorter than one tar header); "
                        "a layer must be a tar, optionally gzip, bzip2, xz or zstd compressed"
                    )
                if header:
                    raise InvalidArchive(
                        f"truncated tar archive: the header after entry {last!r} is cut after {len(header)} of "
                        f"{BLOCK} bytes; the archive is incomplete"
                    )
                if local is not None or long_name is not None or long_link is not None:
                    raise InvalidArchive(
                        f"truncated tar archive: it ends inside the extension headers after entry {last!r}"
                    )
                # No end-of-archive blocks: the archive ends with its last entry (Go's reader accepts that).
                self.finished = True
                return None
            if header == _ZERO_BLOCK:
                self.finished = True
                self._drain()
                return None
            self._count += 1
            fields = parse(header) if parse is not None else None
            if fields is not None:
                typeflag, name, size = fields[0], fields[1], fields[2]
            else:
                typeflag, name, size = self._decode_start(header, last)
            if typeflag in _PAX_LOCAL:
                records = self._pax_records(size, last)
                if local is None:
                    local = records
                else:
                    local.update(records)
                continue
            if typeflag == _PAX_GLOBAL:
                self._global.update(self._pax_records(size, last))
                self.index += 1  # tar-split counts a global header as a member
                continue
            if typeflag == _GNU_LONGNAME:
                long_name = field_text(self._payload(size, last))
                continue
            if typeflag == _GNU_LONGLINK:
                long_link = field_text(self._payload(size, last))
                continue
            if typeflag == _GNU_VOLUME:
                self._discard(size + (-size) % BLOCK, f"volume header after entry {last!r}")
                self.index += 1
                continue
            break

        entry = TarEntry()
        self.index += 1
        if long_name is not None:
            name = long_name
        kind = _KINDS.get(typeflag)
        if kind is None:
            if typeflag != _GNU_SPARSE:
                raise InvalidArchive(f"tar entry {name!r} has unsupported type {chr(typeflag)!r}")
            kind = REGULAR
            entry.sparse, entry.size = old_gnu_map(
                header, lambda: self._read_exact(BLOCK, f"sparse header of entry {name!r}"), name
            )
        if fields is not None:
            entry.mode = fields[3] & 0o7777
            entry.uid = fields[4]
            entry.gid = fields[5]
            entry.mtime_ns = fields[6] * 1_000_000_000
            linkname = fields[7]
            entry.uname = fields[8]
            entry.gname = fields[9]
            if kind is CHARDEV or kind is BLOCKDEV:
                entry.devmajor = header_number(header[329:337], "devmajor", name)
                entry.devminor = header_number(header[337:345], "devminor", name)
        else:
            linkname = self._decode_rest(entry, header, kind, name)
        if long_link is not None:
            linkname = long_link
        sparse_v1: int | None = None  # logical size of a sparse 1.0 entry (its map opens the data)
        sparse_size = entry.size
        if self._global or local:
            records = dict(self._global)
            if local:
                records.update(local)
            name, linkname, size = apply_pax(entry, records, name, linkname, size)
            if any(key.startswith(b"GNU.sparse.") for key in records):
                name, regions, logical = pax_sparse(records, name)
                if regions is None:
                    sparse_v1 = logical
                else:
                    entry.sparse = regions
                    entry.size = sparse_size = logical
        if kind is REGULAR and name.endswith("/"):
            kind = DIRECTORY  # v7 tar marks directories with a trailing slash only
        entry.kind = kind
        entry.name = name
        entry.linkname = linkname
        if kind is REGULAR or (typeflag == 0x44):
            entry.size = size if kind is REGULAR else 0
            if entry.sparse is not None or sparse_v1 is not None:
                entry.size = sparse_size if sparse_v1 is None else sparse_v1
            self._remaining = size
            self._padding = (-size) % BLOCK
        self._current = name
        if entry.sparse is not None or sparse_v1 is not None:
            if sparse_v1 is not None:
                entry.sparse = read_v1_map(self._data_block, name)
            check_regions(entry.sparse or [], entry.size, self._remaining, size, name)
        return entry
