"""CRC-64 as tar-split computes it for file contents.

tar-split checksums each file's content with Go's ``hash/crc64`` using the
``crc64.ISO`` table (CRC-64/GO-ISO: reflected polynomial 0xD800000000000000,
initial value and final XOR all ones) and stores ``Sum(nil)``, which is the
64-bit value in big-endian byte order.  The arithmetic is done by ``fastcrc``
(native code); this module only fixes the variant and the byte order.
"""

from __future__ import annotations

from typing import TypeAlias

from fastcrc import crc64 as _fastcrc64

__all__ = ["CRC64_SIZE", "Buffer", "Crc64", "crc64_digest", "crc64_update"]

#: What the checksum functions accept (``collections.abc.Buffer`` needs Python 3.12).
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Length in bytes of the checksum stored in a tar-split file entry.
CRC64_SIZE = 8

_go_iso = _fastcrc64.go_iso


def crc64_update(crc: int, data: Buffer) -> int:
    """Return the CRC-64/GO-ISO of the bytes summed so far (``crc``) followed by ``data``.

    Start with ``crc = 0`` (the checksum of no bytes); feeding chunks one after
    the other gives the same value as one call over their concatenation.
    """
    result: int = _go_iso(data, crc)
    return result


def crc64_digest(crc: int) -> bytes:
    """Return ``crc`` as tar-split stores it: 8 bytes, big-endian (Go's ``Sum``)."""
    return crc.to_bytes(CRC64_SIZE, "big")


class Crc64:
    """Incremental CRC-64/GO-ISO, the checksum of a tar-split file entry."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Buffer) -> None:
        """Add ``data`` to the checksum."""
        self.value = _go_iso(data, self.value)

    def digest(self) -> bytes:
        """Return the checksum as stored in tar-split metadata (8 bytes, big-endian)."""
        return crc64_digest(self.value)
