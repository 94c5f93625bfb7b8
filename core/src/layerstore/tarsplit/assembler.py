"""Reassembly: rebuild the original tar archive from tar-split metadata and file contents.

Segments are written back verbatim; for each file entry with content, exactly
``size`` bytes are read from ``open_file(name)`` and checked against the
recorded CRC-64.  The archive is produced lazily, a chunk at a time, so memory
stays bounded whatever the layer size.

Names: ``open_file`` receives the member name exactly as recorded (as the tar
reported it: it may start with ``./`` or ``/``, and a directory name may end
with ``/``).  Mapping it into a layer directory is the caller's job:
`layerstore.tarsplit.layerfiles` does it for a mounted layer (strips a leading ``./`` or ``/``
and resolves the rest inside the layer root, links followed as extraction
follows them, never out of the layer).  A name that is not UTF-8 is passed
as ``os.fsdecode(raw_bytes)`` (surrogate escapes), which ``open()`` maps back
to the same bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Generator, Iterator
from typing import IO, TYPE_CHECKING, Final, cast

from ..errors import CorruptMetadata, DigestMismatch
from .crc64 import crc64_digest, crc64_update
from .format import EntryType, iter_records

if TYPE_CHECKING:
    from typing import BinaryIO

    from _typeshed import WriteableBuffer

__all__ = ["AssembledTar", "OpenFile", "assemble"]

#: Opens the content of a tar member by its recorded name.
OpenFile = Callable[[str], "BinaryIO | IO[bytes]"]

_CHUNK: Final = 1024 * 1024
_SEGMENT: Final = int(EntryType.SEGMENT)
_SMALL_PIECE: Final = 256 * 1024


def _unreadable(display: str, exc: OSError) -> DigestMismatch:
    return DigestMismatch(
        f"{display}: content recorded in tar-split metadata cannot be read ({exc.strerror or exc}); "
        "the layer was modified, re-import it"
    )


def _shorter(display: str, got: int, size: int) -> DigestMismatch:
    return DigestMismatch(
        f"{display}: file is shorter than recorded ({got} of {size} bytes); the layer was modified, re-import it"
    )


def _longer(display: str, size: int) -> DigestMismatch:
    return DigestMismatch(
        f"{display}: file is longer than the {size} bytes recorded; the layer was modified, re-import it"
    )


def _changed(display: str) -> DigestMismatch:
    return DigestMismatch(
        f"{display}: content does not match its recorded CRC-64; the layer was modified, re-import it"
    )


def _read_small(name: bytes, size: int, crc: bytes, open_file: OpenFile) -> bytes:
    """The whole content of a file of at most `_CHUNK` bytes, verified (one chunk, nothing held back)."""
    try:
        handle = open_file(os.fsdecode(name))
    except OSError as exc:
        raise _unreadable(name.decode("utf-8", "backslashreplace"), exc) from exc
    try:
        with handle:
            # One read asks for a byte more than recorded: a file that grew shows it at once, and a
            # regular file that returns exactly `size` bytes has reached its end (a short read of a
            # regular file is its end), which saves a second read per file.
            data = handle.read(size + 1)
            if len(data) < size:
                while len(data) < size:  # only a raw (unbuffered) handle returns short reads before the end
                    more = handle.read(size - len(data))
                    if not more:
                        raise _shorter(name.decode("utf-8", "backslashreplace"), len(data), size)
                    data += more
                if handle.read(1):
                    raise _longer(name.decode("utf-8", "backslashreplace"), size)
            elif len(data) > size:
                raise _longer(name.decode("utf-8", "backslashreplace"), size)
    except OSError as exc:  # e.g. EISDIR: a directory now stands where the file was
        raise _unreadable(name.decode("utf-8", "backslashreplace"), exc) from exc
    if crc64_update(0, data) != int.from_bytes(crc, "big"):
        raise _changed(name.decode("utf-8", "backslashreplace"))
    return data


def _file_chunks(name: bytes, size: int, crc: bytes, open_file: OpenFile) -> Iterator[bytes]:
    display = name.decode("utf-8", "backslashreplace")
    try:
        handle = open_file(os.fsdecode(name))
    except OSError as exc:
        raise _unreadable(display, exc) from exc
    # The last chunk is held back until the checksum is verified, so a consumer
    # never receives a complete member whose content is wrong.
    held = b""
    with handle:
        remaining = size
        value = 0
        while remaining:
            try:
                chunk = handle.read(min(remaining, _CHUNK))
            except OSError as exc:
                raise _unreadable(display, exc) from exc
            if not chunk:
                raise _shorter(display, size - remaining, size)
            value = crc64_update(value, chunk)
            remaining -= len(chunk)
            if held:
                yield held
            held = chunk
        try:
            longer = handle.read(1)
        except OSError as exc:
            raise _unreadable(display, exc) from exc
        if longer:
            raise _longer(display, size)
    if crc64_digest(value) != crc:
        raise _changed(display)
    yield held


def _chunks(metadata: BinaryIO | IO[bytes], open_file: OpenFile) -> Generator[bytes, None, None]:
    # Small pieces (headers, padding, small files) are joined into blocks of about
    # `_CHUNK` bytes; pieces of at least `_SMALL_PIECE` bytes are passed on as they are.
    pending: list[bytes] = []
    pending_size = 0
    for kind, name, size, payload, position in iter_records(metadata):
        if kind == _SEGMENT:
            if not payload:
                continue
            piece = payload
        elif not size:
            continue
        elif not name:
            raise CorruptMetadata(
                f"tar-split metadata: file entry at position {position} has {size} bytes "
                "but no name; re-import the layer"
            )
        elif size <= _CHUNK:
            piece = _read_small(name, size, cast(bytes, payload), open_file)
        else:
            if pending:
                yield b"".join(pending)
                pending = []
                pending_size = 0
            yield from _file_chunks(name, size, cast(bytes, payload), open_file)
            continue
        if len(piece) >= _SMALL_PIECE:
            if pending:
                yield b"".join(pending)
                pending = []
                pending_size = 0
            yield piece
            continue
        pending.append(piece)
        pending_size += len(piece)
        if pending_size >= _CHUNK:
            yield b"".join(pending)
            pending = []
            pending_size = 0
    if pending:
        yield b"".join(pending)


class AssembledTar(io.RawIOBase):
    """A readable stream of the archive rebuilt by `assemble` (see there); ``bytes_written`` counts its output."""

    def __init__(
        self,
        metadata: BinaryIO | IO[bytes],
        open_file: OpenFile,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self._chunks = _chunks(metadata, open_file)
        self._current = memoryview(b"")
        self._on_close = on_close
        self.bytes_written = 0

    def readable(self) -> bool:
        """Return True: this stream is readable."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` with the next bytes of the archive; 0 at the end."""
        view = memoryview(buffer).cast("B")
        filled = 0
        wanted = len(view)
        while filled < wanted:
            if not self._current:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._current = memoryview(chunk)
            take = min(wanted - filled, len(self._current))
            view[filled : filled + take] = self._current[:take]
            self._current = self._current[take:]
            filled += take
        self.bytes_written += filled
        return filled

    def chunks(self) -> Iterator[bytes]:
        """Yield the rest of the archive as bytes objects of up to about 1 MiB, without copying them again.

        Faster than `read` for a consumer that writes or hashes pieces as they
        come; do not mix the two on one stream.
        """
        if self._current:
            rest = self._current.tobytes()
            self._current = memoryview(b"")
            self.bytes_written += len(rest)
            yield rest
        for chunk in self._chunks:
            self.bytes_written += len(chunk)
            yield chunk

    def close(self) -> None:
        """Stop reading: close the file being read, then call ``on_close`` (once)."""
        if self.closed:
            return
        try:
            self._chunks.close()
        finally:
            callback, self._on_close = self._on_close, None
            try:
                if callback is not None:
                    callback()
            finally:
                super().close()


def assemble(
    metadata: BinaryIO | IO[bytes],
    open_file: OpenFile,
    *,
    on_close: Callable[[], object] | None = None,
) -> AssembledTar:
    """Return a readable stream of the tar archive described by tar-split ``metadata``.

    ``metadata`` is the gzip-compressed JSON-lines file (``tar-data.json.gz``)
    written by `TarSplitRecorder` or by vbatts/tar-split; ``open_file(name)``
    opens the content of the member ``name`` (see the module docstring for
    names).  Reading raises `DigestMismatch`, naming the file, when a content
    is missing, shorter, longer or different from what was recorded, and
    `CorruptMetadata` when the metadata cannot be read.  ``on_close`` runs once
    when the returned stream is closed (e.g. to close ``metadata`` and release
    a mount); ``metadata`` itself is never closed here.
    """
    return AssembledTar(metadata, open_file, on_close)
