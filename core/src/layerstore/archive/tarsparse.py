"""Sparse-file maps of tar archives: where a sparse member's data regions lie in the file.

GNU tar and bsdtar write four formats: old GNU (type ``S``, the map in the
header and in extension blocks after it), and pax formats 0.0 and 0.1 (the map
in ``GNU.sparse.*`` records) and 1.0 (the map in decimal lines at the start of
the member's data).  A map is a list of (offset, length) pairs; the data holds
the regions back to back.  Errors are `InvalidArchive` naming the member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..errors import InvalidArchive
from .tarentry import header_number, pax_count
from .tarfields import PAX_SPARSE_MAP, text

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_SPARSE_REGIONS", "check_regions", "old_gnu_map", "pax_sparse", "read_v1_map"]

#: Most regions accepted in one map.
MAX_SPARSE_REGIONS: Final = 1 << 20

Regions = list[tuple[int, int]]


def old_gnu_map(header: bytes, next_block: Callable[[], bytes], name: str) -> tuple[Regions, int]:
    """The regions and the logical size of the old-GNU sparse member `name` with header block `header`.

    `next_block` returns the next 512-byte block of the archive; it is called
    for each extension block the header announces.
    """
    regions: Regions = []
    block, start, count, extended = header, 386, 4, header[482]
    while True:
        for i in range(count):
            field = block[start + 24 * i : start + 24 * i + 24]
            if not field[0]:
                break
            offset = header_number(field[:12], "sparse offset", name)
            regions.append((offset, header_number(field[12:], "sparse size", name)))
        if not extended:
            return regions, header_number(header[483:495], "sparse real size", name)
        if len(regions) > MAX_SPARSE_REGIONS:
            raise InvalidArchive(f"tar entry {name!r} has too many sparse regions")
        block = next_block()
        start, count, extended = 0, 21, block[504]


def pax_sparse(records: dict[bytes, bytes], name: str) -> tuple[str, Regions | None, int]:
    """Read the ``GNU.sparse.*`` records of member `name`: its real name, its regions, its logical size.

    The regions are None for format 1.0, whose map opens the data (`read_v1_map`).
    """
    real_name = records.get(b"GNU.sparse.name")
    if real_name:
        name = text(real_name)
    major = records.get(b"GNU.sparse.major")
    if major is not None:
        if major != b"1" or records.get(b"GNU.sparse.minor", b"0") != b"0":
            raise InvalidArchive(f"tar entry {name!r} uses an unknown sparse format {major!r}")
        return name, None, pax_count(records.get(b"GNU.sparse.realsize", b"0"), "sparse real size", name)
    numbers = records.get(PAX_SPARSE_MAP, b"")
    values = [pax_count(v, "sparse map", name) for v in numbers.split(b",")] if numbers else []
    if len(values) % 2:
        raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: an odd number of values")
    regions = list(zip(values[::2], values[1::2], strict=True))
    return name, regions, pax_count(records.get(b"GNU.sparse.size", b"0"), "sparse size", name)


def read_v1_map(next_block: Callable[[], bytes | None], name: str) -> Regions:
    """Read the decimal map that opens the data of sparse 1.0 member `name` (whole blocks).

    `next_block` returns the next 512-byte block of the member's data, or None
    when less than a block of data is left.
    """
    text_left = b""
    numbers: list[int] = []
    wanted: int | None = None
    while wanted is None or len(numbers) < 1 + 2 * wanted:
        block = next_block()
        if block is None:
            raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: it does not fit its data")
        lines = (text_left + block).split(b"\n")
        text_left = lines.pop()
        numbers.extend(pax_count(line, "sparse map", name) for line in lines)
        text_left = b"" if not text_left.strip(b"\0") else text_left
        wanted = numbers[0] if numbers else None
        if wanted is not None and wanted > MAX_SPARSE_REGIONS:
            raise InvalidArchive(f"tar entry {name!r} has too many sparse regions")
    values = numbers[1 : 1 + 2 * wanted]
    return list(zip(values[::2], values[1::2], strict=True))


def check_regions(regions: Regions, size: int, data: int, packed: int, name: str) -> None:
    """Check that the regions of member `name` go forwards, fit its logical `size` and add up to its `data` bytes.

    `packed` (the size in the header) is only reported.
    """
    end = 0
    total = 0
    for offset, length in regions:
        if offset < end or length < 0:
            raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: regions overlap or go backwards")
        end = offset + length
        total += length
    if end > size or total != data:
        raise InvalidArchive(
            f"corrupt sparse map of tar entry {name!r}: {total} bytes of regions for {data} of data "
            f"and a size of {size} (packed {packed})"
        )
