"""Layer archives: compression detection, tar extraction with whiteouts, tree changes and export.

`decompressed` / `detect_compression` (compression), `apply_tar` (apply),
`tree_changes` / `changes_size` (changes), `export_changes` (export),
`TarReader` (tarstream) and the whiteout names (whiteouts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyimport import lazy_attributes

if TYPE_CHECKING:
    from .apply import apply_tar
    from .changes import changes_size, tree_changes
    from .compression import decompressed, detect_compression
    from .export import export_changes
    from .tarstream import TarEntry, TarReader

__all__ = [
    "TarEntry",
    "TarReader",
    "apply_tar",
    "changes_size",
    "decompressed",
    "detect_compression",
    "export_changes",
    "tree_changes",
]

# Each name is imported on first use: a submodule (``archive.inroot`` for an
# export) then loads without the extraction code.
_HOMES = {
    "TarEntry": ".tarstream",
    "TarReader": ".tarstream",
    "apply_tar": ".apply",
    "changes_size": ".changes",
    "decompressed": ".compression",
    "detect_compression": ".compression",
    "export_changes": ".export",
    "tree_changes": ".changes",
}

__getattr__ = lazy_attributes(__name__, _HOMES, globals())
