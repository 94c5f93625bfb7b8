"""Where the btrfs driver keeps each layer, and which names under its home belong to no layer.

Layout under the driver home::

    subvolumes/<id>           the layer (a subvolume); it exists when this path does
    parents/<id>              the parent's ID ("" for a base layer), for `metadata`
    readonly/<id>             marker: made read-only once its diff is applied
    staging/<id>.<rand>       layers being created, renamed into subvolumes/ when complete
    trash/<id>.<rand>         layers being deleted (renamed out of subvolumes/ first)
    lock                      flock held while layers are created and records are collected

staging/ and trash/ are `layerstore.kit.ScratchArea` directories: every
entry carries a lock file flock-held by its owner from before the entry
exists until it is gone, so an unheld entry was left by a killed process.
Every other name is attributable too: a record of a layer whose subvolume is
gone, or a temporary record file, is an orphan.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from layerstore.kit import (
    ScratchArea,
    atomic_write,
    check_layer_id,
    held_lock,
    is_atomic_temporary,
    is_valid_layer_id,
    remove_tree,
)

from . import _btrfs

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Subvolumes"]


class Subvolumes:
    """The layers' subvolumes and records under one driver home; records change under `locked`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._subvolumes = home / "subvolumes"
        self._parents = home / "parents"
        self._readonly = home / "readonly"
        self.staging = ScratchArea(home / "staging", delete=destroy)
        self.trash = ScratchArea(home / "trash", delete=destroy)

    def make_directories(self) -> None:
        """Create the layout's directories (those that exist are kept)."""
        for d in (self._subvolumes, self._parents, self.staging.directory, self.trash.directory, self._readonly):
            d.mkdir(parents=True, exist_ok=True)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the home's lock: layers being created and records being collected exclude each other."""
        return held_lock(self.home / "lock")

    def path(self, layer_id: str) -> Path:
        """The subvolume of layer `layer_id` (`InvalidID` for a name that is not a layer ID)."""
        check_layer_id("btrfs", layer_id)
        return self._subvolumes / layer_id

    def exists(self, layer_id: str) -> bool:
        """True when the layer's subvolume exists."""
        return is_valid_layer_id(layer_id) and os.path.isdir(self.path(layer_id))

    def count(self) -> int:
        """The number of layers."""
        return sum(1 for _ in self._subvolumes.iterdir())

    def record(self, layer_id: str, parent: str | None, *, read_only: bool) -> None:
        """Write the records of a layer being created (call with the lock held)."""
        atomic_write(self._parents / layer_id, parent or "", durable=False)
        if read_only:
            (self._readonly / layer_id).touch()

    def forget(self, layer_id: str) -> None:
        """Delete the records of layer `layer_id` (call with the lock held)."""
        (self._parents / layer_id).unlink(missing_ok=True)
        (self._readonly / layer_id).unlink(missing_ok=True)

    def parent_of(self, layer_id: str) -> str | None:
        """The parent recorded for `layer_id` (None for a base layer or no record)."""
        try:
            return (self._parents / layer_id).read_text() or None
        except FileNotFoundError:
            return None

    def is_read_only(self, layer_id: str) -> bool:
        """True when the layer was created read-only (its subvolume is frozen once its diff is applied)."""
        return os.path.exists(self._readonly / layer_id)

    def sweep(self) -> list[str]:
        """Delete the staging/ and trash/ entries nobody holds (left by killed processes); return them."""
        return [f"staging/{name}" for name in self.staging.sweep()] + [f"trash/{name}" for name in self.trash.sweep()]

    def unheld(self) -> list[str]:
        """The staging/ and trash/ entries nobody holds, without deleting them."""
        return [f"staging/{name}" for name in self.staging.unheld()] + [
            f"trash/{name}" for name in self.trash.unheld()
        ]

    def record_orphans(self) -> list[Path]:
        """Records and temporary files that belong to no layer (call with the lock held)."""
        found = []
        for directory in (self._parents, self._readonly):
            for entry in directory.iterdir():
                if is_atomic_temporary(entry.name) or not self.exists(entry.name):
                    found.append(entry)
        return found


def destroy(path: Path) -> None:
    """Delete subvolume `path` with every subvolume nested in it, deepest first (a plain directory too)."""
    if not os.path.lexists(path):
        return
    if not _btrfs.is_subvolume(path):
        remove_tree(path)  # a plain directory: a layer record a crash cut short
        return
    for nested in _btrfs.nested_subvolumes(path):
        with contextlib.suppress(FileNotFoundError):
            _btrfs.delete_subvolume(nested.parent, nested.name)
    with contextlib.suppress(FileNotFoundError):
        _btrfs.delete_subvolume(path.parent, path.name)
