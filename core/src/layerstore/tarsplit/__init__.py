"""Byte-exact tar disassembly and reassembly, compatible with vbatts/tar-split.

While a layer tar streams into a driver, `TarSplitRecorder` records every byte
that is not file content (headers, extension headers, padding, end blocks,
trailing bytes) plus each file's size and CRC-64 as gzip-compressed JSON lines
(``tar-data.json.gz``).  `assemble` later rebuilds the identical archive from
that metadata and the files in the layer.  Debian's ``tar-split`` program reads
our metadata and we read its.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .assembler import AssembledTar, OpenFile, assemble
from .crc64 import Crc64, crc64_digest, crc64_update
from .format import Entry, EntryType, EntryWriter, encode_entry, iter_entries
from .layerfiles import layer_opener

if TYPE_CHECKING:
    from .recorder import TarSplitRecorder, disassemble

__all__ = [
    "AssembledTar",
    "Crc64",
    "Entry",
    "EntryType",
    "EntryWriter",
    "OpenFile",
    "TarSplitRecorder",
    "assemble",
    "crc64_digest",
    "crc64_update",
    "disassemble",
    "encode_entry",
    "iter_entries",
    "layer_opener",
]


def __getattr__(name: str) -> Any:
    # The recorder (and the tar parsing it needs) is imported on first use, so
    # that reassembly (export) does not pay for it.
    if name in ("TarSplitRecorder", "disassemble"):
        from . import recorder

        return getattr(recorder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
