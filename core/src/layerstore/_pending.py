"""Marks of `apply_diff` calls in progress, so that one cut short by a crash is not taken for a whole layer.

The facade writes ``<home>/.layerstore/pending/<h(id)>`` before the driver's
``apply_diff`` hook runs and deletes it when the hook returns or its
failure has been cleaned up.  A mark that is still there while nobody
holds the layer's lock belongs to a killed process: the layer is then
half-applied, the facade reports it as missing, and the next ``create`` of
that ID or ``gc`` removes what the driver holds of it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .kit.atomic import atomic_write

__all__ = ["PendingApplies"]


class PendingApplies:
    """The pending marks of one driver home."""

    def __init__(self, core_dir: Path) -> None:
        self._dir = core_dir / "pending"

    def _file(self, layer_id: str) -> Path:
        return self._dir / hashlib.sha256(layer_id.encode()).hexdigest()

    def mark(self, layer_id: str) -> None:
        """Note that an `apply_diff` into `layer_id` starts."""
        self._dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self._file(layer_id), f"{layer_id}\n", durable=False)

    def clear(self, layer_id: str) -> None:
        """The `apply_diff` into `layer_id` ended (or what it left was removed)."""
        self._file(layer_id).unlink(missing_ok=True)

    def is_marked(self, layer_id: str) -> bool:
        """True while a mark for `layer_id` exists (in progress, or cut short)."""
        return self._file(layer_id).exists()

    @property
    def directory(self) -> Path:
        """Where the marks live."""
        return self._dir

    def marked(self) -> list[str]:
        """Every layer ID with a mark."""
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith("."):
                continue  # a temporary file of atomic_write
            try:
                found.append((self._dir / name).read_text().strip())
            except FileNotFoundError:
                continue
        return sorted(filter(None, found))
