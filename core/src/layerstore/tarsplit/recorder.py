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
from .format import EntryWriter
from .segmenter import TRAILING_CHUNK, Segmenter

if TYPE_CHECKING:
    from typing import BinaryIO

    from _typeshed import WriteableBuffer

__all__ = ["TRAILING_CHUNK", "TarSplitRecorder", "disassemble"]

_DRAIN_SIZE: Final = 128 * 1024  # read, hashed and checksummed while in the L2 cache


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
        self._parser = Segmenter(self._writer)
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
