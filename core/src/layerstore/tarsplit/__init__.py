"""Byte-exact tar disassembly and reassembly, compatible with vbatts/tar-split.

While a layer tar streams into a driver, `TarSplitRecorder` records every byte
that is not file content (headers, extension headers, padding, end blocks,
trailing bytes) plus each file's size and CRC-64 as gzip-compressed JSON lines
(``tar-data.json.gz``).  `assemble` later rebuilds the identical archive from
that metadata and the files in the layer.  Debian's ``tar-split`` program reads
our metadata and we read its.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyimport import lazy_attributes

if TYPE_CHECKING:
    from .assembler import AssembledTar, OpenFile, assemble
    from .crc64 import Crc64, crc64_digest, crc64_update
    from .format import Entry, EntryType, EntryWriter, encode_entry, iter_entries
    from .layerfiles import layer_opener
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


# Each name is imported on first use: a command pays only for its own side (recording on import,
# reassembly on export), not for the other's modules.
_HOMES = {
    "AssembledTar": "assembler", "OpenFile": "assembler", "assemble": "assembler",
    "Crc64": "crc64", "crc64_digest": "crc64", "crc64_update": "crc64",
    "Entry": "format", "EntryType": "format", "EntryWriter": "format", "encode_entry": "format",
    "iter_entries": "format", "layer_opener": "layerfiles",
    "TarSplitRecorder": "recorder", "disassemble": "recorder",
}


__getattr__ = lazy_attributes(__name__, {name: f".{module}" for name, module in _HOMES.items()}, globals())
