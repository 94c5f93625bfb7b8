"""Disassembly proper: the push parser that cuts a tar archive into tar-split segments and file entries.

`Segmenter` is fed the archive's bytes as they pass through
`layerstore.tarsplit.recorder.TarSplitRecorder` (whose docstring describes the
segmentation); it keeps only header bytes, padding and the content of members
that stay in the segments, and checksums the rest.  Which member a header
starts is `layerstore.tarsplit.members`'s business.

With ``layerstore-accel`` installed, runs of members of the common shape (a
plain ustar/GNU header, at most one plain pax header, an ASCII name seen for
the first time) are cut by its native ``segment_members`` in one call; the
segmenter takes over at the first other member.  The lines are the same byte
for byte (``tests/tarsplit/test_native_segmenter.py`` records archives both
ways).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

from ..archive import _accel
from ..archive.tarfields import BLOCK
from ..errors import InvalidArchive
from .crc64 import crc64_digest, crc64_update
from .headers import MAX_SPECIAL_SIZE, TarHeader, parse_header
from .members import EXTENSION_TYPES, TYPE_GNU_SPARSE, Members, display

if TYPE_CHECKING:
    from .format import EntryWriter

__all__ = ["TRAILING_CHUNK", "Segmenter"]

#: Size of the segments that hold bytes after the end-of-archive blocks (as Go's tar-split).
TRAILING_CHUNK: Final = 1024 * 1024

#: Header bytes that may accumulate before a member (many extension headers in a row).
_MAX_PENDING: Final = 16 * MAX_SPECIAL_SIZE

# Parser states.
_HEADER: Final = 0  # collecting a 512-byte header block
_DATA: Final = 1  # member content: checksummed, not kept
_SPECIAL: Final = 2  # extension header data: kept and parsed
_PAD: Final = 3  # padding to the next block boundary
_END: Final = 4  # after the first zero block: is the next one zero too?
_TRAILING: Final = 5  # after the end of the archive
_INLINE: Final = 6  # content kept in the metadata: a member extraction does not write to disk
_SPARSE_EXT: Final = 7  # extension blocks of an old-GNU sparse header

_ZERO_BLOCK: Final = bytes(BLOCK)

# Members of the common shape are cut in C when ``layerstore-accel`` is installed (same entries, byte
# for byte); None: all in Python.  Module-level so that tests can switch it off.
_native_run = _accel.segment_members
_NativeRun: TypeAlias = Callable[
    [memoryview, int, bytearray, set[bytes], int, Callable[[int, memoryview], int]], _accel.SegmentedRun
]


class Segmenter:
    """Push parser: `feed` it the archive bytes in any chunking, then call `finish`.

    It writes segments and file entries to the `EntryWriter` as the bytes
    pass, and raises `InvalidArchive` (naming the offset of the header at
    fault) for a malformed archive.
    """

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
        self._members = Members()
        self._trailing = bytearray()
        self._sparse_header = TarHeader(0, b"", 0)  # an old-GNU sparse header whose extension blocks follow

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
                    if _native_run is not None and end - pos >= BLOCK and not self._members.waiting:
                        taken = self._native_members(_native_run, data, pos)
                        if taken != pos:
                            pos = taken
                            continue
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

    def _native_members(self, run: _NativeRun, data: memoryview, pos: int) -> int:
        """Let the native `run` take the members of the common shape from `pos` on; return where it stopped."""
        taken, lines, position, header_pos, state, name, size, remaining, crc = run(
            data, pos, self._pending, self._members.seen, self._writer.position, crc64_update
        )
        if taken == pos:
            return pos
        self._writer.add_lines(lines, position)
        self._header_offset = self._offset + header_pos - pos
        self._offset += taken - pos
        self._state = state
        if state == _DATA and name is not None:  # a content the chunk did not hold whole
            self._member_name = name
            self._member_size = size
            self._crc = crc
        self._remaining = remaining
        return taken

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
            if self._members.waiting:
                raise self._invalid("extension header is not followed by a member (truncated archive)")
            return
        try:
            header = parse_header(block)
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        self._pending += block
        self._members.waiting = True
        if len(self._pending) > _MAX_PENDING:
            raise self._invalid("too many extension headers in a row")
        typeflag = header.typeflag
        if typeflag in EXTENSION_TYPES:
            if header.size < 0 or header.size > MAX_SPECIAL_SIZE:
                raise self._invalid(f"extension header {display(header.name)!r} has size {header.size}")
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
        if typeflag == TYPE_GNU_SPARSE and block[482]:
            self._sparse_header = header
            self._state = _SPARSE_EXT  # extension blocks of the sparse map follow
            return
        try:
            name, size, inline = self._members.member(header)
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        self._start_member(name, size, inline=inline)

    def _end_of_sparse_header(self) -> None:
        """The last extension block of an old-GNU sparse member: its data follows, kept inline."""
        header = self._sparse_header
        self._state = _HEADER
        self._start_member(self._members.old_gnu_sparse(header), header.size, inline=True)

    def _end_of_special(self) -> None:
        data = bytes(self._pending[self._special_start :])
        try:
            global_name = self._members.extension(self._special_type, self._special_header_name, data)
        except ValueError as exc:
            raise self._invalid(f"pax header {display(self._special_header_name)!r}: {exc}") from None
        if global_name is not None:
            # A global header is reported as a member of its own, before its padding (as Go does).
            self._start_member(global_name, 0)
        self._expect_padding(self._pad_after)

    def _start_member(self, name: bytes, size: int, *, inline: bool = False) -> None:
        self._flush_pending()
        if not self._members.first(name):
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
        if state != _DATA and self._members.waiting:
            raise self._invalid("extension header is not followed by a member (truncated archive)")
        if state in (_DATA, _INLINE):
            raise self._invalid(
                f"{display(self._member_name)!r} is truncated: {self._remaining} of {self._member_size} bytes missing"
            )
        if state == _SPECIAL:
            raise self._invalid(f"extension header {display(self._special_header_name)!r} is truncated")
        if state == _END:
            self._trailing += self._block  # a partial second end block: trailing bytes
            self._block.clear()
        self._flush_pending()
        if self._trailing:
            self._writer.add_segment(bytes(self._trailing))
            self._trailing.clear()
