"""Reassembly: rebuild the original tar archive from tar-split metadata and file contents.

Segments are written back verbatim; for each file entry with content, exactly
``size`` bytes are read from ``open_file(name)`` and checked against the
recorded CRC-64.  The archive is produced lazily, a chunk at a time, so memory
stays bounded whatever the layer size.

Names: ``open_file`` receives the member name exactly as recorded (as the tar
reported it: it may start with ``./`` or ``/``, and a directory name may end
with ``/``).  Mapping it into a layer directory is the caller's job:
`layer_opener` does it for a mounted layer (strips a leading ``./`` or ``/``,
joins the rest to the layer root as tar-split's path getter does, and refuses
names that would lead out of the layer).  A name that is not UTF-8 is passed
as ``os.fsdecode(raw_bytes)`` (surrogate escapes), which ``open()`` maps back
to the same bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Generator, Iterator
from typing import IO, TYPE_CHECKING, Final

from ..errors import CorruptMetadata, DigestMismatch
from .crc64 import crc64_digest, crc64_update
from .format import Entry, EntryType, iter_entries

if TYPE_CHECKING:
    from typing import BinaryIO

    from _typeshed import WriteableBuffer

__all__ = ["AssembledTar", "OpenFile", "assemble", "layer_opener"]

#: Opens the content of a tar member by its recorded name.
OpenFile = Callable[[str], "BinaryIO | IO[bytes]"]

_CHUNK: Final = 1024 * 1024


def _file_chunks(entry: Entry, open_file: OpenFile) -> Iterator[bytes]:
    name = entry.path
    display = entry.name.decode("utf-8", "backslashreplace")
    try:
        handle = open_file(name)
    except OSError as exc:
        raise DigestMismatch(
            f"{display}: content recorded in tar-split metadata cannot be read ({exc.strerror or exc}); "
            "the layer was modified, re-import it"
        ) from exc
    # The last chunk is held back until the checksum is verified, so a consumer
    # never receives a complete member whose content is wrong.
    held = b""
    with handle:
        remaining = entry.size
        crc = 0
        while remaining:
            chunk = handle.read(min(remaining, _CHUNK))
            if not chunk:
                raise DigestMismatch(
                    f"{display}: file is shorter than recorded ({entry.size - remaining} of {entry.size} bytes); "
                    "the layer was modified, re-import it"
                )
            crc = crc64_update(crc, chunk)
            remaining -= len(chunk)
            if held:
                yield held
            held = chunk
        if handle.read(1):
            raise DigestMismatch(
                f"{display}: file is longer than the {entry.size} bytes recorded; the layer was modified, re-import it"
            )
    if crc64_digest(crc) != entry.payload:
        raise DigestMismatch(
            f"{display}: content does not match its recorded CRC-64; the layer was modified, re-import it"
        )
    yield held


def _chunks(metadata: BinaryIO | IO[bytes], open_file: OpenFile) -> Generator[bytes, None, None]:
    for entry in iter_entries(metadata):
        if entry.type == EntryType.SEGMENT:
            if entry.payload:
                yield entry.payload
        elif entry.size:
            if not entry.name:
                raise CorruptMetadata(
                    f"tar-split metadata: file entry at position {entry.position} has {entry.size} bytes "
                    "but no name; re-import the layer"
                )
            yield from _file_chunks(entry, open_file)


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


def layer_opener(root: str | os.PathLike[str]) -> OpenFile:
    """Return an ``open_file`` for `assemble` that reads member contents from the layer directory ``root``.

    The recorded name loses a leading ``./`` or ``/`` and is looked up below
    ``root``.  A name with a ``..`` component, or one that resolves through a
    symbolic link to a place outside ``root``, raises `CorruptMetadata`; a
    final symbolic link is not followed (a regular file was recorded there, so
    the open fails and `assemble` reports the file as changed).
    """
    base = os.path.realpath(root)

    def open_file(name: str) -> IO[bytes]:
        relative = name.lstrip("/")
        while relative.startswith("./"):
            relative = relative[2:].lstrip("/")
        parts = relative.split("/")
        if ".." in parts:
            raise CorruptMetadata(f"tar-split metadata names {name!r}, outside the layer; re-import the layer")
        path = os.path.join(base, relative)
        parent = os.path.realpath(os.path.dirname(path))
        if parent != base and not parent.startswith(base + os.sep):
            raise CorruptMetadata(f"tar-split metadata names {name!r}, which leads outside the layer")
        fd = os.open(os.path.join(parent, os.path.basename(path)), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(fd, "rb")

    return open_file
