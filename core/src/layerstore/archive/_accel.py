"""The optional native functions of extraction and recording (distribution ``layerstore-accel``), looked up once.

Each is None where the distribution is not installed, or where its build is
older than the function; the caller then does the same work in Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "HeaderFields",
    "PlainRun",
    "SegmentedRun",
    "create_files",
    "parse_header",
    "parse_pax",
    "segment_members",
    "take_plain_files",
]

#: (typeflag, name, size, mode, uid, gid, mtime, linkname, uname, gname) of a tar header of the common shape.
HeaderFields = tuple[int, str, int, int, int, int, int, str, str, str]
#: (pos, lines, position, header_pos, state, name, size, remaining, crc) after a run of tar-split members.
SegmentedRun = tuple[int, bytes, int, int, int, bytes | None, int, int, int]
#: (pos, count, [pending file, ...], total size, last name) after a run of plain files.
PlainRun = tuple[int, int, list[Any], int, str]


def _function(name: str) -> Any:
    try:
        module = importlib.import_module("layerstore_accel")
    except ImportError:  # not installed: the extraction does this work itself
        return None
    return getattr(module, name, None)


#: Create a batch of (path, data, mode, atime_ns, mtime_ns) files with the GIL released; None or (index, errno).
create_files: Final[Callable[[tuple[tuple[bytes, bytes, int, int, int], ...]], tuple[int, int] | None] | None] = (
    _function("create_files")
)
#: Decode a 512-byte header of the common shape into `HeaderFields`; None for any other header.
parse_header: Final[Callable[[bytes], HeaderFields | None] | None] = _function("parse_header")
#: Parse the records of a pax header as `layerstore.archive.tarfields.parse_pax` (NUL padding ends them); None
#: for anything unusual (malformed, NULs in keys or names, GNU sparse pairs), which that function then parses.
parse_pax: Final[Callable[[bytes], dict[bytes, bytes] | None] | None] = _function("parse_pax")
#: Record a run of tar members of the common shape as tar-split lines (`layerstore.tarsplit.segmenter`).
segment_members: Final[
    Callable[[memoryview, int, bytearray, set[bytes], int, Callable[[int, memoryview], int]], SegmentedRun] | None
] = _function("segment_members")
#: Take a run of plain small regular files of a new layer from the reader's buffer (`layerstore.archive.apply`).
take_plain_files: Final[Callable[..., PlainRun | None] | None] = _function("take_plain_files")
