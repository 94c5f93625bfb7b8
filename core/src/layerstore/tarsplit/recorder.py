"""Disassembly: record tar-split metadata while a tar archive streams through.

`TarSplitRecorder` is a readable pass-through stream.  Whatever reads it (the
layer extractor) gets exactly the bytes of the source, while a push parser
walks those bytes block by block and writes tar-split entries:

- one segment per archive member holding every byte since the previous
  member's content: that member's padding, then the extension headers (pax
  ``x``, GNU ``L``/``K``) with their data and padding, then the header block;
- one file entry per member, of every type, named as Go's ``archive/tar``
  reports ``Header.Name`` (GNU long name, pax ``path`` and ustar prefix
  applied), with the content size and CRC-64 (size 0 and no CRC for members
  without content: directories, links, devices, fifos);
- a global pax header (``g``) is a member of its own, as in Go;
- a member whose path an earlier member already had gets no file entry (Go's
  tar-split allows one per path): its header and content stay in the
  segments; the importer keeps the earlier member's content aside and moves
  it into the metadata too (`layerstore.tarsplit.inline`);
- the content of a member that layer extraction never writes to disk
  (whiteouts ``.wh.*`` and opaque markers with content, AUFS metadata below
  ``.wh..wh.*``, GNU dump-directory listings and volume labels) stays in the segments, and its
  file entry has no size: export reproduces it without reading the layer,
  and Go's tar-split reassembles it the same way;
- at the end, one segment with the last padding and the end-of-archive zero
  blocks, then everything after them in segments of at most 1 MiB.

This is the segmentation of vbatts/tar-split v0.11.x/v0.12.x, so the JSON we
write is the same as the Go tool's for the same archive.  Deliberate
differences: header-only members (links, directories, ...) whose size field is
not zero are recorded with size 0, because they have no content to read back
(Go records the field and then cannot reassemble them); a single zero block
ends the archive, whatever follows it is kept as trailing bytes (Go refuses
such archives); a sparse member's data (old GNU, pax 0.0, 0.1 and 1.0, as
bsdtar writes them too) stays in the segments with a size-less file entry,
because a file entry would make Go's tar-split write the expanded file
instead (Go records the expanded content and reassembles a different
archive), while the segments reassemble the original bytes everywhere.

File content is never held in memory: it is only checksummed (native CRC) as it
passes.  Memory is bounded by the largest extension header (1 MiB) plus one
1 MiB trailing chunk.
"""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, Final

from ..errors import InvalidArchive
from ._tarheader import (
    BLOCK,
    HEADER_ONLY_TYPES,
    MAX_SPECIAL_SIZE,
    HeaderError,
    clean_name,
    parse_header,
    parse_pax,
    parse_string,
    validate_pax,
)
from .crc64 import crc64_digest, crc64_update
from .format import EntryWriter

if TYPE_CHECKING:
    from typing import BinaryIO

    from _typeshed import WriteableBuffer

__all__ = ["TRAILING_CHUNK", "TarSplitRecorder", "disassemble"]

#: Size of the segments that hold bytes after the end-of-archive blocks (as Go's tar-split).
TRAILING_CHUNK: Final = 1024 * 1024

#: Header bytes that may accumulate before a member (many extension headers in a row).
_MAX_PENDING: Final = 16 * MAX_SPECIAL_SIZE

_DRAIN_SIZE: Final = 1024 * 1024

# Parser states.
_HEADER: Final = 0  # collecting a 512-byte header block
_DATA: Final = 1  # member content: checksummed, not kept
_SPECIAL: Final = 2  # extension header data: kept and parsed
_PAD: Final = 3  # padding to the next block boundary
_END: Final = 4  # after the first zero block: is the next one zero too?
_TRAILING: Final = 5  # after the end of the archive
_INLINE: Final = 6  # content kept in the metadata: a member extraction does not write to disk
_SPARSE_EXT: Final = 7  # extension blocks of an old-GNU sparse header

_TYPE_PAX: Final = ord("x")
_TYPE_PAX_GLOBAL: Final = ord("g")
_TYPE_GNU_LONGNAME: Final = ord("L")
_TYPE_GNU_LONGLINK: Final = ord("K")
_TYPE_GNU_SPARSE: Final = ord("S")
_TYPE_REGA: Final = 0
_TYPE_GNU_DUMPDIR: Final = ord("D")
_TYPE_GNU_VOLUME: Final = ord("V")
_WHITEOUT: Final = b".wh."
_WHITEOUT_META: Final = b".wh..wh."
_SPARSE_PAX_PREFIX: Final = b"GNU.sparse."
_ZERO_BLOCK: Final = bytes(BLOCK)


def _display(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


class _Parser:
    """Push parser: `feed` it the archive bytes in any chunking, then call `finish`."""

    def __init__(self, writer: EntryWriter) -> None:
        self._writer = writer
        self._state = _HEADER
        self._offset = 0  # archive offset of the next byte fed
        self._header_offset = 0  # archive offset of the last header block begun
        self._block = bytearray()  # partial header block / partial second end block
        self._pending = bytearray()  # raw bytes of the next segment
        self._remaining = 0  # bytes left in the current _DATA / _SPECIAL / _PAD section
        self._pad_after = 0  # padding that follows the current _DATA / _SPECIAL section
        self._crc = 0
        self._special_start = 0  # where the current extension header data begins in _pending
        self._special_type = 0
        self._special_header_name = b""
        self._member_name = b""  # name of the member whose content is being read
        self._member_size = 0
        self._long_name = b""
        self._extended = False  # extension headers seen that still wait for their member
        self._pax: dict[bytes, bytes] | None = None
        self._seen: set[bytes] = set()
        self._trailing = bytearray()
        self._sparse_name = b""
        self._sparse_size = 0

    # -- errors -----------------------------------------------------------

    def _invalid(self, what: str) -> InvalidArchive:
        return InvalidArchive(f"invalid tar archive (header at byte {self._header_offset}): {what}")

    # -- feeding ----------------------------------------------------------

    def feed(self, data: memoryview) -> None:
        """Consume the next bytes of the archive."""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                self._crc = crc64_update(self._crc, data[pos : pos + take])
                pos += take
                self._offset += take
                self._remaining -= take
                if not self._remaining:
                    self._end_of_content()
            elif state == _HEADER:
                if not self._block:
                    self._header_offset = self._offset
                    if end - pos >= BLOCK:
                        block = bytes(data[pos : pos + BLOCK])
                        pos += BLOCK
                        self._offset += BLOCK
                        self._header_block(block)
                        continue
                pos, whole = self._fill_block(data, pos, end)
                if whole is not None:
                    self._header_block(whole)
            elif state == _SPARSE_EXT:
                pos, whole = self._fill_block(data, pos, end)
                if whole is not None:
                    self._pending += whole
                    if len(self._pending) > _MAX_PENDING:
                        raise self._invalid("too many sparse extension blocks")
                    if not whole[504]:
                        self._end_of_sparse_header()
            elif state == _INLINE:
                take = min(self._remaining, end - pos)
                self._pending += data[pos : pos + take]
                pos += take
                self._offset += take
                self._remaining -= take
                if len(self._pending) >= TRAILING_CHUNK:
                    self._flush_pending()
                if not self._remaining:
                    self._expect_padding(-self._member_size % BLOCK)
            elif state in (_PAD, _SPECIAL):
                # Padding and extension header data are kept verbatim for the next segment.
                take = min(self._remaining, end - pos)
                self._pending += data[pos : pos + take]
                pos += take
                self._offset += take
                self._remaining -= take
                if not self._remaining:
                    if state == _PAD:
                        self._state = _HEADER
                    else:
                        self._end_of_special()
            elif state == _END:
                pos, whole = self._fill_block(data, pos, end)
                if whole is not None:
                    if whole == _ZERO_BLOCK:
                        self._pending += whole
                        self._flush_pending()
                    else:
                        self._flush_pending()
                        self._trailing += whole
                    self._state = _TRAILING
            else:
                self._add_trailing(data[pos:end])
                self._offset += end - pos
                return

    def _fill_block(self, data: memoryview, pos: int, end: int) -> tuple[int, bytes | None]:
        """Add bytes at ``pos`` to the partial block; return the new position and the block once it is whole."""
        take = min(BLOCK - len(self._block), end - pos)
        self._block += data[pos : pos + take]
        self._offset += take
        if len(self._block) < BLOCK:
            return pos + take, None
        block = bytes(self._block)
        self._block.clear()
        return pos + take, block

    def _add_trailing(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data):
            take = min(TRAILING_CHUNK - len(self._trailing), len(data) - pos)
            self._trailing += data[pos : pos + take]
            pos += take
            if len(self._trailing) == TRAILING_CHUNK:
                self._writer.add_segment(bytes(self._trailing))
                self._trailing.clear()

    def _flush_pending(self) -> None:
        if self._pending:
            self._writer.add_segment(self._pending)  # encoded before the clear: no copy needed
            self._pending.clear()

    def _expect_padding(self, pad: int) -> None:
        if pad:
            self._state = _PAD
            self._remaining = pad
        else:
            self._state = _HEADER

    # -- headers ----------------------------------------------------------

    def _header_block(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self._pending += block
            self._state = _END
            if self._extended:
                raise self._invalid("extension header is not followed by a member (truncated archive)")
            return
        try:
            header = parse_header(block)
        except HeaderError as exc:
            raise self._invalid(str(exc)) from None
        self._pending += block
        self._extended = True
        if len(self._pending) > _MAX_PENDING:
            raise self._invalid("too many extension headers in a row")
        typeflag = header.typeflag
        if typeflag in (_TYPE_PAX, _TYPE_PAX_GLOBAL, _TYPE_GNU_LONGNAME, _TYPE_GNU_LONGLINK):
            if header.size < 0 or header.size > MAX_SPECIAL_SIZE:
                raise self._invalid(f"extension header {_display(header.name)!r} has size {header.size}")
            self._special_type = typeflag
            self._special_header_name = header.name
            self._special_start = len(self._pending)
            self._pad_after = -header.size % BLOCK
            if header.size:
                self._state = _SPECIAL
                self._remaining = header.size
            else:
                self._end_of_special()
            return
        name = header.name
        size = header.size
        sparse = typeflag == _TYPE_GNU_SPARSE
        if sparse and block[482]:
            self._sparse_name = name
            self._sparse_size = size
            self._state = _SPARSE_EXT  # extension blocks of the sparse map follow
            return
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
        self._long_name = b""
        self._pax = None
        self._extended = False
        if typeflag in HEADER_ONLY_TYPES or (typeflag == _TYPE_REGA and name.endswith(b"/")):
            size = 0
        elif size < 0:
            raise self._invalid(f"{_display(name)!r} has negative size {size}")
        inline = sparse or typeflag in (_TYPE_GNU_DUMPDIR, _TYPE_GNU_VOLUME) or _not_extracted(name)
        self._start_member(name, size, inline=inline)

    def _end_of_sparse_header(self) -> None:
        """The last extension block of an old-GNU sparse member: its data follows, kept inline."""
        name = self._long_name or self._sparse_name
        size = self._sparse_size
        self._long_name = b""
        self._pax = None
        self._extended = False
        self._state = _HEADER
        self._start_member(name, size, inline=True)

    def _end_of_special(self) -> None:
        data = bytes(self._pending[self._special_start :])
        typeflag = self._special_type
        if typeflag in (_TYPE_GNU_LONGNAME, _TYPE_GNU_LONGLINK):
            if typeflag == _TYPE_GNU_LONGNAME:
                self._long_name = parse_string(data)
            self._expect_padding(self._pad_after)
            return
        try:
            records = parse_pax(data)
            validate_pax(records)
        except HeaderError as exc:
            raise self._invalid(f"pax header {_display(self._special_header_name)!r}: {exc}") from None
        if typeflag == _TYPE_PAX:
            self._pax = records
            self._expect_padding(self._pad_after)
            return
        # A global header is reported as a member of its own, before its padding (as Go does).
        name = records.get(b"path") or self._special_header_name
        self._long_name = b""
        self._pax = None
        self._extended = False
        self._start_member(name, 0)
        self._expect_padding(self._pad_after)

    def _start_member(self, name: bytes, size: int, *, inline: bool = False) -> None:
        key = clean_name(name)
        self._flush_pending()
        if key in self._seen:
            # A path repeated: tar-split allows one file entry per path, and the
            # file on disk is the last member's, so a repeat has no file entry
            # and its content stays in the segments.
            if size:
                self._member_name = name
                self._member_size = size
                self._remaining = size
                self._state = _INLINE
            else:
                self._state = _HEADER
            return
        self._seen.add(key)
        if size and inline:
            # Extraction does not write this content anywhere: it travels in the
            # segments, and the file entry has no size (nothing to read back).
            self._writer.add_file(name)
            self._member_name = name
            self._member_size = size
            self._remaining = size
            self._state = _INLINE
        elif size:
            self._member_name = name
            self._member_size = size
            self._crc = 0
            self._remaining = size
            self._state = _DATA
        else:
            self._writer.add_file(name)
            self._state = _HEADER

    def _end_of_content(self) -> None:
        self._writer.add_file(self._member_name, self._member_size, crc64_digest(self._crc))
        self._expect_padding(-self._member_size % BLOCK)

    # -- end of input -------------------------------------------------------

    def finish(self) -> None:
        """Check that the archive ended where it may end, and write the last segments."""
        state = self._state
        if state == _HEADER and self._block:
            raise self._invalid("truncated header block")
        if state != _DATA and self._extended:
            raise self._invalid("extension header is not followed by a member (truncated archive)")
        if state in (_DATA, _INLINE):
            raise self._invalid(
                f"{_display(self._member_name)!r} is truncated: {self._remaining} of {self._member_size} bytes missing"
            )
        if state == _SPECIAL:
            raise self._invalid(f"extension header {_display(self._special_header_name)!r} is truncated")
        if state == _END:
            self._trailing += self._block  # a partial second end block: trailing bytes
            self._block.clear()
        self._flush_pending()
        if self._trailing:
            self._writer.add_segment(bytes(self._trailing))
            self._trailing.clear()


def _not_extracted(name: bytes) -> bool:
    """Whether layer extraction leaves this member's content off the disk (whiteouts, opaque markers, AUFS metadata)."""
    if _WHITEOUT not in name:
        return False
    parts = [p for p in name.split(b"/") if p and p != b"."]
    return bool(parts) and (parts[-1].startswith(_WHITEOUT) or any(p.startswith(_WHITEOUT_META) for p in parts))


class TarSplitRecorder(io.RawIOBase):
    """A readable stream that returns exactly the bytes of ``stream`` and records tar-split metadata.

    ``stream`` is an uncompressed tar archive (any binary file object).  While
    the consumer reads, gzip-compressed tar-split JSON lines are written to the
    writable binary ``metadata`` (normally ``tar-data.json.gz``).

    The consumer must read to end of file (bytes after the end-of-archive
    blocks too): the metadata is complete, including its gzip trailer, when a
    read first returns ``b""``.  `finish` reads whatever the consumer left and
    completes the metadata; `close` just closes this stream (the metadata stays
    incomplete, unusable, when the end was not reached: check `complete`).
    Neither ``stream`` nor ``metadata`` is closed.

    A malformed archive raises `InvalidArchive` from the read that reaches the
    bad bytes, and from every later read.  Errors of ``stream`` and of
    ``metadata`` (e.g. a full disk) propagate unchanged.  ``bytes_read`` counts
    the bytes passed through.
    """

    def __init__(self, stream: BinaryIO | IO[bytes], metadata: BinaryIO | IO[bytes]) -> None:
        super().__init__()
        self._source = stream
        self._readinto = getattr(stream, "readinto", None)
        self._writer = EntryWriter(metadata)
        self._parser = _Parser(self._writer)
        self._error: InvalidArchive | None = None
        self._complete = False
        self.bytes_read = 0

    @property
    def complete(self) -> bool:
        """Whether the whole source has been read and the metadata written completely."""
        return self._complete

    def readable(self) -> bool:
        """Return True: this stream is readable."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Read the next bytes of the source into ``buffer`` and record them; 0 at end of file."""
        if self._error is not None:
            raise self._error
        if self._complete:
            return 0
        view = memoryview(buffer).cast("B")
        if self._readinto is not None:
            count = self._readinto(view) or 0
        else:
            chunk = self._source.read(len(view))
            count = len(chunk)
            view[:count] = chunk
        try:
            if count:
                self._parser.feed(view[:count])
            else:
                self._parser.finish()
                self._writer.close()
                self._complete = True
        except InvalidArchive as exc:
            self._error = exc
            raise
        self.bytes_read += count
        return count

    def finish(self) -> None:
        """Read the rest of the source (discarding it) so that the metadata is complete."""
        buffer = bytearray(_DRAIN_SIZE)
        while self.readinto(buffer):
            pass


def disassemble(stream: BinaryIO | IO[bytes], metadata: BinaryIO | IO[bytes]) -> None:
    """Read the tar archive ``stream`` to its end, writing its tar-split metadata to ``metadata``.

    Raises `InvalidArchive` for a malformed archive.  Closes neither stream.
    """
    recorder = TarSplitRecorder(stream, metadata)
    try:
        recorder.finish()
    finally:
        recorder.close()
