"""Compression detection and transparent decompression of layer archives.

Layers arrive as plain tar or compressed with gzip, bzip2, xz or zstd; the
format is recognised by its magic bytes.  `decompressed` returns a buffered
readable stream of the uncompressed bytes in which every decoder failure
(truncated or corrupt data) surfaces as `InvalidArchive`; `plain_file_span`
tells when those bytes are simply the rest of a regular file.
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import os
import stat
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..counting import CountingReader
from ..errors import InvalidArchive

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FORMATS", "decompressed", "detect_compression", "plain_file_span", "xz_decoder"]

FORMATS: tuple[str, ...] = ("none", "gzip", "bzip2", "xz", "zstd")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_HEAD = 6
_BUFFER = 1 << 17  # the size of the extractor's reads (see `layerstore.archive.tarbuffer`)


def detect_compression(head: bytes) -> str:
    """Return the compression of a stream from its first bytes: "none", "gzip", "bzip2", "xz" or "zstd"."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class _Source(io.RawIOBase):
    """Raw view of a binary stream that first replays the bytes already read from it."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            got = readinto(view)
            return int(got or 0)
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Checked(io.RawIOBase):
    """Raw stream over a decoder that turns the decoder's failures into `InvalidArchive`."""

    def __init__(self, kind: str, opener: Callable[[], Any]) -> None:
        self._kind = kind
        self._inner: Any = None
        self._errors = _decoder_errors(kind)
        try:
            self._inner = opener()
        except self._errors as exc:
            raise _invalid(kind, exc) from exc

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            readinto = getattr(self._inner, "readinto", None)
            if readinto is not None:
                return int(readinto(buffer) or 0)
            view = memoryview(buffer).cast("B")
            data = self._inner.read(len(view))
        except self._errors as exc:
            raise _invalid(self._kind, exc) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._inner is not None and not self.closed:
            self._inner.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """Streaming zstd decoder over any number of frames that notices a frame cut short."""

    def __init__(self, source: io.RawIOBase) -> None:
        import zstandard

        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._error: type[Exception] = zstandard.ZstdError
        self._obj: Any = None
        self._pending = memoryview(b"")
        self._out = memoryview(b"")
        # Input is fed in slices so that a highly compressed block cannot expand
        # into an unbounded amount of memory in one call.
        self._feed = 1 << 16
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._out:
            if self._eof:
                return 0
            self._fill()
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _fill(self) -> None:
        if not self._pending:
            chunk = self._source.read(_BUFFER)
            if not chunk:
                if self._obj is not None and not self._obj.eof:
                    raise InvalidArchive("corrupt or truncated zstd data: the stream ends inside a frame")
                self._eof = True
                return
            self._pending = memoryview(chunk)
        if self._obj is None or self._obj.eof:
            self._obj = self._dctx.decompressobj()
        piece, self._pending = self._pending[: self._feed], self._pending[self._feed :]
        try:
            out = self._obj.decompress(piece)
        except self._error as exc:
            raise _invalid("zstd", exc) from exc
        if self._obj.eof and self._obj.unused_data:
            self._pending = memoryview(bytes(self._obj.unused_data) + bytes(self._pending))
        if len(out) > (8 << 20):
            self._feed = max(256, self._feed // 16)
        self._out = memoryview(out)


def _invalid(kind: str, exc: BaseException) -> InvalidArchive:
    detail = str(exc) or type(exc).__name__
    return InvalidArchive(f"corrupt or truncated {kind} data: {detail}; the archive cannot be read")


@functools.cache
def _decoder_errors(kind: str) -> tuple[type[BaseException], ...]:
    # Computed on first use and per kind: importing the decoder modules costs time that a plain tar, or a
    # gzip layer (python-xz alone takes tens of milliseconds to import), does not need.
    errors: list[type[BaseException]] = [EOFError, OSError, ValueError]
    if kind == "gzip":
        errors.append(zlib.error)
        try:
            from isal import igzip_lib, isal_zlib

            errors += [cast("type[BaseException]", isal_zlib.error),
                       cast("type[BaseException]", igzip_lib.IsalError)]
        except ImportError:  # pragma: no cover - isal is a declared dependency
            pass
    elif kind == "xz":
        errors.append(lzma.LZMAError)
        try:
            import xz

            errors.append(xz.XZError)
        except ImportError:  # pragma: no cover
            pass
    return tuple(errors)


def _read_head(stream: BinaryIO) -> tuple[bytes, bool]:
    """Return the first bytes of `stream` and whether they were consumed (False: only peeked)."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        try:
            head = peek(_HEAD)
        except (OSError, ValueError):
            head = b""
        if len(head) >= _HEAD:
            return bytes(head[:_HEAD]), False
    head = b""
    while len(head) < _HEAD:
        chunk = stream.read(_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head, True


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def plain_file_span(stream: BinaryIO) -> tuple[int, int] | None:
    """``(fd, offset)`` when `decompressed(stream)` will yield the bytes of a regular file from ``offset`` to its end.

    That is: `stream` is a file opened by ``open(path, "rb")`` (or
    ``sys.stdin.buffer`` redirected from a file), possibly behind a
    `layerstore.counting.CountingReader`, it sits at ``offset``, and the bytes
    there are not compressed.  Other file objects are never trusted, even
    with a ``fileno``: a decoder or a member of an outer archive reports the
    descriptor of a file whose bytes are not the ones it yields.  Call it
    before reading `stream`; it reads the first bytes with ``pread`` and
    moves nothing.  None for anything else: pipes, compressed data, other
    file objects.
    """
    while isinstance(stream, CountingReader):
        stream = stream.source
    if type(stream) is io.BufferedReader:
        raw = stream.raw
        if type(raw) is not io.FileIO:
            return None
    elif type(stream) is not io.FileIO:
        return None
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        offset = stream.tell()
        head = os.pread(fd, _HEAD, offset)
    except (OSError, ValueError):
        return None
    return (fd, offset) if detect_compression(head) == "none" else None


def decompressed(stream: BinaryIO) -> BinaryIO:
    """Return a buffered readable stream of the uncompressed bytes of `stream`.

    The compression (none, gzip, bzip2, xz, zstd) is detected from the magic
    bytes.  Truncated or corrupt compressed data raise `InvalidArchive` while
    reading.  Closing the returned stream does not close `stream`.
    """
    seekable = _is_seekable(stream)
    start = stream.tell() if seekable else 0
    head, consumed = _read_head(stream)
    if consumed and seekable:
        stream.seek(start)
        consumed = False
    kind = detect_compression(head)
    source = _Source(head if consumed else b"", stream)
    if kind == "none":
        if not consumed and isinstance(stream, io.BufferedIOBase):
            return cast(BinaryIO, stream)
        return cast(BinaryIO, io.BufferedReader(source, _BUFFER))
    raw: io.RawIOBase
    if kind == "gzip":
        raw = _Checked("gzip", lambda: _gzip_open(source))
    elif kind == "bzip2":
        raw = _Checked("bzip2", lambda: bz2.BZ2File(source, "rb"))
    elif kind == "xz":
        python_xz = _python_xz()
        if python_xz is not None and seekable and start == 0:
            raw = _Checked("xz", lambda: python_xz.open(stream, "rb"))
        else:
            raw = _Checked("xz", lambda: lzma.LZMAFile(cast(BinaryIO, source), "rb"))  # noqa: SIM115 - closed by _Checked
    else:
        raw = _ZstdReader(source)
    return cast(BinaryIO, io.BufferedReader(raw, _BUFFER))


def _gzip_open(source: io.RawIOBase) -> Any:
    try:
        from isal import igzip

        return cast(Any, igzip).GzipFile(fileobj=source, mode="rb")
    except ImportError:  # pragma: no cover - isal is a declared dependency
        import gzip

        return gzip.GzipFile(fileobj=source, mode="rb")


def _python_xz() -> Any:
    """The python-xz module when it is installed (the ``xz`` extra), else None: `lzma` decodes instead.

    python-xz needs random access, so it reads files (also through the CLI);
    pipes always go through `lzma`.
    """
    try:
        import xz
    except ImportError:
        return None
    return xz


def xz_decoder(seekable: bool = True) -> str:
    """Which library decodes an ``.xz`` input here: ``"python-xz"`` or ``"lzma"``."""
    return "python-xz" if seekable and _python_xz() is not None else "lzma"
