"""Write a stream to a file or file descriptor with as few copies and system calls as possible."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable
from typing import BinaryIO, Final

__all__ = ["flushed_descriptor", "write_all", "write_stream"]

CHUNK: Final = 1 << 20


def _widen_pipe(fd: int) -> None:
    """Give a pipe on `fd` a 1 MiB buffer (best effort): a block then crosses in one write, not sixteen."""
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < CHUNK:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def flushed_descriptor(out: BinaryIO | int) -> int | None:
    """The file descriptor behind `out` (`out` itself when it is one), after flushing its file object.

    None when `out` has no descriptor (a ``BytesIO``, captured output).
    """
    if isinstance(out, int):
        return out
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
    out.flush()  # what the file object buffered goes first
    return fd


def write_stream(
    src: BinaryIO, out: BinaryIO | int, progress: Callable[[int], object] | None = None, *, name: str | None = None
) -> int:
    """Copy all of `src` to `out` (a binary file or a file descriptor); return the number of bytes.

    A real file is written through its descriptor, unbuffered, with the blocks
    ``src.read1`` hands out (no copy), and a pipe is first widened to 1 MiB.
    ``progress(n)`` is called after each block of ``n`` bytes.  An `OSError`
    of writing carries `name` (what the user calls `out`, e.g. the file name
    or "standard output") as its ``filename``, so that the error names the
    output and not the source.
    """
    try:
        return _write_stream(src, out, progress)
    except OSError as exc:
        if exc.filename is None and name is not None and getattr(exc, "_layerstore_output", False):
            exc.filename = name
        raise


def _write_stream(src: BinaryIO, out: BinaryIO | int, progress: Callable[[int], object] | None) -> int:
    read: Callable[[int], bytes] = getattr(src, "read1", src.read)
    fd = flushed_descriptor(out)
    total = 0
    if fd is None:
        if isinstance(out, int):  # not reached: flushed_descriptor returns every int as it is
            raise TypeError(f"descriptor {out} has no file to write to")
        while chunk := read(CHUNK):
            _write_file(out, chunk)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))
        out.flush()
        return total
    _widen_pipe(fd)
    while chunk := read(CHUNK):
        write_all(fd, chunk)
        total += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return total


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to descriptor `fd` (a short write is continued); errors are marked as the output's."""
    view = memoryview(data)
    while view:
        view = view[_write_fd(fd, view) :]


def _output_error(exc: OSError) -> OSError:
    exc._layerstore_output = True  # type: ignore[attr-defined]  # tells write errors from read errors
    return exc


def _write_fd(fd: int, data: memoryview) -> int:
    try:
        return os.write(fd, data)
    except OSError as exc:
        raise _output_error(exc) from None


def _write_file(out: BinaryIO, data: bytes) -> None:
    try:
        out.write(data)
    except OSError as exc:
        raise _output_error(exc) from None
