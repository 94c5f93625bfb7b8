"""A pass-through reader that reports how many bytes went through it (progress bars of imports, loads, saves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

__all__ = ["CountingReader"]


class CountingReader:
    """Reads `source` unchanged and calls ``report(n)`` for every non-empty chunk; closing closes `source`."""

    def __init__(self, source: BinaryIO, report: Callable[[int], object]) -> None:
        self._source = source
        self._report = report

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all with -1) and report them."""
        data = self._source.read(size)
        if data:
            self._report(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        """Read what the source has at hand (its ``read1``, without copying where it has one) and report it."""
        read1 = getattr(self._source, "read1", None)
        data = read1(size) if read1 is not None else self._source.read(size)
        if data:
            self._report(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer` and report the bytes."""
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:  # no copy through a bytes object
            n = int(readinto(buffer) or 0)
        else:
            data = self._source.read(len(memoryview(buffer)))
            n = len(data)
            memoryview(buffer).cast("B")[:n] = data
        if n:
            self._report(n)
        return n

    @property
    def source(self) -> BinaryIO:
        """The stream read from."""
        return self._source

    def readable(self) -> bool:
        """Always True."""
        return True

    # Seeking passes through, so that a file keeps the decoders that need random access (python-xz).
    def seekable(self) -> bool:
        """Whether the source can seek."""
        try:
            return bool(self._source.seekable())
        except (AttributeError, OSError, ValueError):
            return False

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek the source (the bytes skipped are not reported)."""
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        """The source's position."""
        return self._source.tell()

    def close(self) -> None:
        """Close the source."""
        self._source.close()

    @property
    def closed(self) -> bool:
        """Whether the source is closed."""
        return bool(self._source.closed)
