"""What killed processes leave under an overlay home, and how ``gc`` / ``orphans`` find and remove it.

Leftovers are: staging and trash entries nobody holds (`layerstore.kit.ScratchArea`),
what a killed process of an earlier release left at the top of the home (``.tmp-*``, ``.new-*``,
``.trash-*``, ``.probe-*``, and ``.diff-copy-*`` in a layer),
frozen states no child stacks on and stale child records (`links.Freezer.unused`), links no layer
record explains (`links.Links.stale_links`), and temporary files of `layerstore.kit.atomic_write`.
Each is found under the lock its owner holds while working on it, so a live operation is never
disturbed; what is busy now is looked at again next time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from layerstore.errors import LayerStoreError
from layerstore.fstree import remove_tree_quietly
from layerstore.kit import ScratchArea, sweep_atomic_temporaries
from layerstore.mountinfo import read_mountinfo

from . import _mount
from ._layout import STAGING_DIR, TRASH_DIR, Layout
from .links import Freezer

__all__ = ["Housekeeper", "delete_scratch", "scratch_areas"]

_log = logging.getLogger(__name__)
_EARLIER_PREFIXES = (".tmp-", ".new-", ".trash-", ".probe-")


def delete_scratch(path: Path) -> None:
    """Delete a staging or trash entry: unmount what a killed probe left mounted in it, then remove it.

    Files that resist are a warning and stay for the next sweep: the layer
    they belonged to is gone from view already.
    """
    top = os.fspath(path) + os.sep
    for mount in sorted((m.mountpoint for m in read_mountinfo() if m.mountpoint.startswith(top)), reverse=True):
        with contextlib.suppress(LayerStoreError):
            _mount.unmount(mount)
    remove_tree_quietly(path, _log.warning)


def scratch_areas(home: str) -> tuple[ScratchArea, ScratchArea]:
    """The staging and trash areas of the overlay home `home`."""
    return (
        ScratchArea(Path(home, STAGING_DIR), delete=delete_scratch),
        ScratchArea(Path(home, TRASH_DIR), delete=delete_scratch),
    )


class Housekeeper:
    """Finds and removes the leftovers under one overlay home."""

    def __init__(self, layout: Layout, freezer: Freezer) -> None:
        self.layout = layout
        self.freezer = freezer
        self.staging = freezer.staging
        self.trash = freezer.trash

    def sweep_quietly(self) -> None:
        """Delete unheld staging and trash entries; a failure is a warning, never an error (start-up, cleanup)."""
        for area in (self.staging, self.trash):
            try:
                area.sweep()
            except OSError as exc:
                _log.warning("could not sweep %s: %s", area.directory, exc.strerror or exc)

    def collect(self) -> list[str]:
        """Remove every leftover found now; describe each."""
        removed = [f"overlay staging leftover {n}" for n in self.staging.sweep()]
        removed += [f"overlay trash leftover {n}" for n in self.trash.sweep()]
        for layer_id in self.layout.layer_ids():
            removed += self.freezer.drop_unused(layer_id, blocking=False)
        for description, action in self.freezer.links.stale_links():
            action()
            removed.append(description)
        for path in self._earlier_layout():
            remove_tree_quietly(path, _log.warning)
            removed.append(f"overlay leftover {os.path.relpath(path, self.layout.home)}")
        removed += [f"overlay temporary file {n}" for n in sweep_atomic_temporaries(self.layout.home)]
        return removed

    def describe(self) -> list[str]:
        """Describe every leftover found now, removing nothing."""
        found = [f"overlay staging leftover {n}" for n in self.staging.unheld()]
        found += [f"overlay trash leftover {n}" for n in self.trash.unheld()]
        for layer_id in self.layout.layer_ids():
            found += [description for description, _ in self.freezer.unused(layer_id)]
        found += [description for description, _ in self.freezer.links.stale_links()]
        found += [f"overlay leftover {os.path.relpath(p, self.layout.home)}" for p in self._earlier_layout()]
        return found

    def _earlier_layout(self) -> list[str]:
        """Staging, trash and copies of killed processes in the layout of earlier releases."""
        home = self.layout.home
        found = [os.path.join(home, n) for n in os.listdir(home) if n.startswith(_EARLIER_PREFIXES)]
        for layer_id in self.layout.layer_ids():
            layer = self.layout.dir(layer_id)
            with contextlib.suppress(FileNotFoundError):
                found += [os.path.join(layer, n) for n in os.listdir(layer) if n.startswith(".diff-copy-")]
        return sorted(found)
