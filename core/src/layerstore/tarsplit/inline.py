"""Move the content of chosen file entries into tar-split metadata, so reassembly no longer reads them.

Used after an import for members whose files the extraction had to remove
(see `layerstore.archive.aside`): each chosen file entry keeps its name but
loses its size, and its content follows as segments (of at most 1 MiB), so
the metadata reassembles the same archive, with our reader and with Go's
tar-split alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..errors import CorruptMetadata
from .crc64 import crc64_digest, crc64_update
from .format import EntryType, EntryWriter, iter_records

__all__ = ["inline_kept"]

_CHUNK: Final = 1024 * 1024


def inline_kept(metadata: str | os.PathLike[str], contents: Mapping[int, str | os.PathLike[str]]) -> None:
    """Rewrite the gzip tar-split file `metadata` in place: file entry number ``n`` gets the bytes of ``contents[n]``.

    File entries are numbered from 0 in order.  Each content must have the
    recorded size and CRC-64, else `CorruptMetadata`.  The file is replaced
    atomically (a temporary file beside it, then a rename).
    """
    source = Path(metadata)
    temp = source.with_name(f".{source.name}.inline")
    number = -1
    try:
        with open(source, "rb") as old, open(temp, "wb") as new:
            writer = EntryWriter(new)
            for kind, name, size, payload, _ in iter_records(old):
                if kind == EntryType.SEGMENT:
                    writer.add_segment(payload or b"")
                    continue
                number += 1
                kept = contents.get(number)
                if kept is None:
                    writer.add_file(name, size, payload)
                    continue
                writer.add_file(name)
                _copy_segments(writer, kept, name, size, payload)
            writer.close()
            new.flush()
            os.fsync(new.fileno())
        os.replace(temp, source)
    finally:
        temp.unlink(missing_ok=True)


def _copy_segments(
    writer: EntryWriter, path: str | os.PathLike[str], name: bytes, size: int, crc: bytes | None
) -> None:
    value = 0
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            value = crc64_update(value, chunk)
            total += len(chunk)
            writer.add_segment(chunk)
    if total != size or (size and crc64_digest(value) != crc):
        shown = name.decode("utf-8", "backslashreplace")
        raise CorruptMetadata(f"the kept content of {shown!r} does not match its recorded size and CRC-64")
