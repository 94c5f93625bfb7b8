"""Stream helpers of the image transports: digest-verifying readers and on-the-fly compressors."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import DigestMismatch

__all__ = ["CompressingReader", "SizeCheckedReader", "VerifyingReader"]

_CHUNK = 1 << 20


class VerifyingReader(io.RawIOBase):
    """Reads a blob and checks its size and sha256 against what a descriptor promised.

    More bytes than promised fail at once; a short stream or another digest
    fails at EOF (`DigestMismatch` naming `what`).  `report(n)` is called for
    every chunk read.
    """

    def __init__(self, source: BinaryIO, digest: str, size: int, what: str,
                 report: Callable[[int], object] | None = None) -> None:
        super().__init__()
        self._source = source
        self._digest = digest
        self._size = size
        self._what = what
        self._report = report
        self._hash = hashlib.sha256()
        self._count = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        if not data:
            self._check_end()
            return 0
        n = len(data)
        self._count += n
        if self._count > self._size:
            raise DigestMismatch(f"{self._what}: more than the {self._size} bytes its descriptor states")
        self._hash.update(data)
        view[:n] = data
        if self._report is not None:
            self._report(n)
        return n

    def _check_end(self) -> None:
        if self.verified:
            return
        actual = "sha256:" + self._hash.hexdigest()
        if self._count != self._size:
            raise DigestMismatch(
                f"{self._what}: {self._count} bytes where its descriptor states {self._size} (truncated or wrong)"
            )
        if actual != self._digest:
            raise DigestMismatch(f"{self._what}: content is {actual}, not {self._digest} as its descriptor states")
        self.verified = True

    def drain(self) -> None:
        """Read what is left and verify (a decompressor may stop before the end of the blob)."""
        while self.read(_CHUNK):
            pass
        self._check_end()


class SizeCheckedReader:
    """Passes through a blob that checks its own digest as it is read (a layer rebuilt from the store); counts its size.

    More bytes than `size` fail at once, fewer at the end (`drain`); reading
    to the end is what makes the source check itself, so call `drain`.
    """

    def __init__(self, source: BinaryIO, size: int, what: str) -> None:
        self._source = source
        self._read = getattr(source, "read1", source.read)
        self._size = size
        self._what = what
        self._count = 0

    def read1(self, size: int = -1) -> bytes:
        """What the source has at hand, up to `size` bytes (fewer only at the end when it has no ``read1``)."""
        data: bytes = self._read(size)
        self._count += len(data)
        if self._count > self._size:
            raise DigestMismatch(f"{self._what}: more than the {self._size} bytes its descriptor states")
        return data

    read = read1

    def drain(self) -> None:
        """Read to the end (the source's own check runs there) and check the size."""
        while self.read1(_CHUNK):
            pass
        if self._count != self._size:
            raise DigestMismatch(
                f"{self._what}: {self._count} bytes where its descriptor states {self._size} (truncated or wrong)"
            )


# ISA-L's strongest level: about ten times the speed of zlib's default level 6 (which made a push of a
# 200 MB layer take 10-20 s here, single-threaded) for blobs about a tenth larger.
_GZIP_LEVEL = 3


class CompressingReader(io.RawIOBase):
    """Reads `source` compressed with gzip (deterministic: no name, no time) or zstd.

    gzip comes from ISA-L (`isal`): the same input and `isal` version always
    give the same bytes, so a layer compressed twice gives one blob.
    """

    def __init__(self, source: BinaryIO, kind: str) -> None:
        super().__init__()
        self._source = source
        if kind == "gzip":
            from isal import isal_zlib

            z = isal_zlib.compressobj(_GZIP_LEVEL, isal_zlib.DEFLATED, 31)
            self._compress: Callable[[bytes], bytes] = z.compress
            self._flush: Callable[[], bytes] = z.flush
        elif kind == "zstd":
            import zstandard

            c = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
            self._compress, self._flush = c.compress, c.flush
        else:
            raise ValueError(f"unknown compression {kind!r}")
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending and not self._eof:
            data = self._source.read(_CHUNK)
            if data:
                self._pending = self._compress(data)
            else:
                self._pending = self._flush()
                self._eof = True
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
