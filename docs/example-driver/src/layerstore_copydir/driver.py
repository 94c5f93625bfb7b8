"""The copydir driver: each layer is a plain directory holding a full copy of its parent.

Layout under the driver home::

    layers/<id>    the layer's tree (what `get` returns)
    staging/       layers being built (`layerstore.kit.ScratchArea`), renamed into layers/ when complete
    trash/         layers being removed: renamed here first, then deleted

The facade (`layerstore.Driver`) checks IDs, parents and "layer in use",
counts mounts and serialises operations on one layer; diff, apply_diff,
changes and diff_size come from `layerstore.naivediff`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import Capabilities, hookimpl
from layerstore.errors import LayerExists, LayerNotFound, StorageFull
from layerstore.kit import ScratchArea, check_options, check_storage_options, copy_tree

if TYPE_CHECKING:
    from layerstore import CreateOpts, IDMappings

__all__ = ["CopydirDriver"]

NAME = "copydir"
OPTIONS: Mapping[str, tuple[str, ...] | None] = {}
"""Driver options and their allowed values (None: any value); none yet."""
STORAGE_OPTIONS: tuple[str, ...] = ()
"""Per-layer storage options (``CreateOpts.storage_opts``) this driver honours; none yet."""


class CopydirDriver:
    """The copydir storage driver: factory ``CopydirDriver(home, options, id_maps)`` and plugin object."""

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options(NAME, options, OPTIONS)
        self.home = Path(home)
        self.id_maps = id_maps
        self._layers = self.home / "layers"
        self._layers.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._staging = ScratchArea(self.home / "staging")
        self._trash = ScratchArea(self.home / "trash")

    def _path(self, id: str) -> Path:
        return self._layers / id

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Ownership is kept as the ID maps say; nothing else is declared."""
        return Capabilities(idmap=True)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Build the layer in staging (an empty root, or a copy of `parent`), then rename it into place."""
        check_storage_options(NAME, id, opts.storage_opts, STORAGE_OPTIONS)
        if self._path(id).exists():
            raise LayerExists(f"layer {id} already exists in driver {NAME}")
        if parent is not None and not self._path(parent).is_dir():
            raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver {NAME}")
        try:
            with self._staging.reserve(id) as entry:
                if parent is None:
                    os.chmod(entry.path, 0o755)
                    os.chown(entry.path, *self.id_maps.root_pair)
                else:
                    copy_tree(self._path(parent), entry.path)
                entry.publish(self._path(id))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left to create layer {id} in {self.home}: {exc.strerror}") from exc
            raise

    @hookimpl
    def remove(self, id: str) -> None:
        """Rename the layer into the trash (it is gone at once), then delete it."""
        try:
            self._trash.discard(self._path(id), id)
        except FileNotFoundError:
            raise LayerNotFound(f"layer {id} does not exist in driver {NAME}") from None

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """The layer's directory is its full tree."""
        if not self._path(id).is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver {NAME}")
        return str(self._path(id))

    @hookimpl
    def put(self, id: str) -> None:
        """Nothing is mounted: nothing to tear down."""

    @hookimpl
    def exists(self, id: str) -> bool:
        """A layer exists when its directory does (it appears and disappears by rename)."""
        return self._path(id).is_dir()

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """The number of layers."""
        return [("Layers", str(len(os.listdir(self._layers))))]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """The layer's directory."""
        if not self._path(id).is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver {NAME}")
        return {"dir": str(self._path(id))}

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete what killed processes left in staging/ and trash/."""
        return [f"{NAME} leftover {n}" for n in self._staging.sweep() + self._trash.sweep()]
