"""Generic `diff`, `apply_diff`, `diff_size` and `changes` for drivers without native ones.

Registered ``trylast`` on every driver's plugin manager by the `Driver`
facade: it mounts layers through the bare get/put of a driver plugin
(`layerstore.mounts.PluginMounts`), each ``get`` paired with a ``put``, and
compares, extracts and exports plain directory trees with
`layerstore.archive`.  A driver that answers these hooks itself wins.  (The
model is containers/storage's ``NaiveDiffDriver``, which wraps the bare
driver, one way.)  It keeps no reference counts and takes no locks: under
the facade, the facade holds a reference on each layer around the call
(`layerstore.fallbackmounts`), so another user's ``put`` never unmounts a
layer while it is compared.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, BinaryIO

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .change import Change
    from .idtools import IDMappings
    from .mounts import PluginMounts

__all__ = ["NaiveDiff"]


class NaiveDiff:
    """The fallback implementations of the diff hooks, working from the bare `get`/`put` of one driver plugin."""

    def __init__(self, mounts: PluginMounts, id_maps: IDMappings) -> None:
        self._mounts = mounts
        self._id_maps = id_maps

    def _changes(self, id: str, parent: str | None) -> tuple[str, list[Change]]:
        """Mount `id` (left mounted for the caller to `put`) and `parent` (released); return the path and changes."""
        from .archive.changes import tree_changes  # imported on use: drivers load faster

        mounts = self._mounts
        layer_dir = mounts.get(id=id, mount_label="")
        try:
            if parent is None:
                return layer_dir, tree_changes(layer_dir, None)
            parent_dir = mounts.get(id=parent, mount_label="")
            try:
                return layer_dir, tree_changes(layer_dir, parent_dir)
            finally:
                mounts.put(id=parent)
        except BaseException:
            mounts.put(id=id)
            raise

    @hookimpl(trylast=True)
    def changes(self, id: str, parent: str | None) -> list[Change]:
        """Compare the mounted trees of `id` and `parent` (see `tree_changes`)."""
        _, result = self._changes(id, parent)
        self._mounts.put(id=id)
        return result

    @hookimpl(trylast=True)
    def diff_size(self, id: str, parent: str | None) -> int:
        """Sum the sizes of the regular files added or modified against `parent`, each inode once."""
        from .archive.changes import changes_size

        layer_dir, result = self._changes(id, parent)
        try:
            return changes_size(layer_dir, result)
        finally:
            self._mounts.put(id=id)

    @hookimpl(trylast=True)
    def diff(self, id: str, parent: str | None) -> BinaryIO:
        """Export the changes of `id` against `parent` as a tar stream; closing it releases the mount of `id`."""
        from .archive.export import export_changes

        layer_dir, result = self._changes(id, parent)
        released = threading.Lock()
        state = {"done": False}

        def release() -> None:
            with released:
                if state["done"]:
                    return
                state["done"] = True
            self._mounts.put(id=id)

        try:
            return export_changes(layer_dir, result, id_maps=self._id_maps, on_close=release)
        except BaseException:
            release()
            raise

    @hookimpl(trylast=True)
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract `stream` into the mounted layer `id`, deleting what canonical whiteouts name."""
        from .archive.apply import apply_tar

        mounts = self._mounts
        layer_dir = mounts.get(id=id, mount_label="")
        try:
            return apply_tar(stream, layer_dir, id_maps=self._id_maps)
        finally:
            mounts.put(id=id)
