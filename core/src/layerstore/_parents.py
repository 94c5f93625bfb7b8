"""The facade's own record of which layer is built on which, under ``<home>/.layerstore/``.

The facade sees every ``create(id, parent)``, so it keeps the parent index
once for every driver and refuses to remove a layer with children
(`LayerInUse`) before the driver's ``remove`` hook is called.  Layout::

    .layerstore/parents/<h(id)>             "<parent>\\n<id>\\n" ("" as parent for a base layer)
    .layerstore/children/<h(parent)>/<h(id)>  "<id>\\n<parent>\\n": <id> is (being) built on <parent>

(``h`` is the sha256 of the ID, so any opaque ID is a safe file name.)  The
child mark is written before the driver's ``create`` hook runs and dropped
after its ``remove``; a mark whose layer does not exist and that no live
operation holds (left by a killed process) is stale and dropped when seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from .kit.atomic import atomic_write

__all__ = ["ParentIndex"]


def _h(layer_id: str) -> str:
    return hashlib.sha256(layer_id.encode()).hexdigest()


class ParentIndex:
    """Parent records and child marks of one driver home (callers hold the layers' locks)."""

    def __init__(self, core_dir: Path) -> None:
        self._parents = core_dir / "parents"
        self._children = core_dir / "children"

    def record(self, layer_id: str, parent: str | None) -> None:
        """Note that `layer_id` is being created on `parent` (before the driver creates it)."""
        self._parents.mkdir(parents=True, exist_ok=True)
        if parent is not None:
            marks = self._children / _h(parent)
            marks.mkdir(parents=True, exist_ok=True)
            atomic_write(marks / _h(layer_id), f"{layer_id}\n{parent}\n", durable=False)
        atomic_write(self._parents / _h(layer_id), f"{parent or ''}\n{layer_id}\n", durable=False)

    def forget(self, layer_id: str) -> None:
        """Drop the records of `layer_id` (after it was removed, or its creation failed)."""
        parent = self.parent(layer_id)
        if parent is not None:
            marks = self._children / _h(parent)
            (marks / _h(layer_id)).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other children remain
                marks.rmdir()
        (self._parents / _h(layer_id)).unlink(missing_ok=True)

    def parent(self, layer_id: str) -> str | None:
        """The parent `layer_id` was created on (None: a base layer, or created before the index existed)."""
        try:
            text = (self._parents / _h(layer_id)).read_text()
        except FileNotFoundError:
            return None
        return text.partition("\n")[0] or None

    def children(self, layer_id: str) -> list[str]:
        """The IDs marked as built on `layer_id` (some may be stale: check them)."""
        marks = self._children / _h(layer_id)
        try:
            names = sorted(os.listdir(marks))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            try:
                child = (marks / name).read_text().partition("\n")[0]
            except FileNotFoundError:
                continue
            if child:
                found.append(child)
        return found

    def directories(self) -> list[Path]:
        """The directories this index writes files into (for sweeping temporary files)."""
        return [self._parents, *_subdirs(self._children)]

    def records(self) -> list[tuple[str, str | None]]:
        """Every (layer, parent) pair recorded or marked, for collecting stale ones."""
        found: set[tuple[str, str | None]] = set()
        for directory in (self._parents, *_subdirs(self._children)):
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    text = (directory / name).read_text()
                except (FileNotFoundError, IsADirectoryError):
                    continue
                if name.startswith("."):
                    continue  # a temporary file of atomic_write
                if directory == self._parents:
                    parent, _, rest = text.partition("\n")
                    layer = rest.partition("\n")[0]
                else:
                    layer, _, rest = text.partition("\n")
                    parent = rest.partition("\n")[0]
                if layer:
                    found.add((layer, parent or None))
        return sorted(found, key=lambda pair: (pair[0], pair[1] or ""))

    def drop_mark(self, parent: str, child: str) -> None:
        """Drop one stale child mark (its layer does not exist and nobody is creating it)."""
        marks = self._children / _h(parent)
        (marks / _h(child)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            marks.rmdir()


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [directory / name for name in os.listdir(directory)]
    except FileNotFoundError:
        return []
