"""The vfs driver: each layer is a plain directory holding a full copy of its parent.

Layout under the driver home::

    dir/<id>       the layer's tree (what `get` returns)
    staging/       layers being created (`layerstore.kit.ScratchArea`), renamed to dir/<id> when complete
    trash/         layers being removed: renamed here first, then deleted

Creation and removal rename whole directories, so `exists` never sees a
half-copied or half-deleted layer; what a killed process leaves in
staging/ or trash/ is invisible and swept by the ``gc`` hook (``layerstore gc``).
The parent index and the "parent of a child" check are the facade's.

diff, apply_diff, changes and diff_size come from `layerstore.naivediff`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import Capabilities, hookimpl
from layerstore.errors import DriverNotSupported, LayerExists, LayerNotFound, StorageFull
from layerstore.fstree import remove_tree_quietly
from layerstore.kit import (
    COPY_METHODS,
    ScratchArea,
    check_layer_id,
    check_options,
    check_storage_options,
    copy_tree,
    is_valid_layer_id,
    probe_reflink,
)
from layerstore.mountinfo import backing_filesystem

if TYPE_CHECKING:
    from layerstore import CreateOpts, IDMappings

__all__ = ["VfsDriver"]

_log = logging.getLogger(__name__)

OPTIONS: Mapping[str, tuple[str, ...]] = {"copy": ("auto", *COPY_METHODS)}
"""The driver options of vfs and their allowed values."""


class VfsDriver:
    """The vfs storage driver (factory and plugin object).

    ``VfsDriver(home, options, id_maps)``.  Options: ``copy`` = ``auto``
    (default: reflink where the filesystem supports it, else
    ``copy_file_range``), or one of ``reflink``, ``copy_file_range``,
    ``sendfile``, ``read`` to force a data copy method.  No per-layer
    storage options.
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options("vfs", options, OPTIONS)
        self.home = Path(home)
        self.id_maps = id_maps
        self._layers = self.home / "dir"
        self._staging = ScratchArea(self.home / "staging")
        # A removal that cannot delete every file still succeeds (the layer is
        # gone from view): the rest is a warning, and gc retries it.
        self._trash = ScratchArea(self.home / "trash", delete=lambda path: remove_tree_quietly(path, _log.warning))
        for directory in (self.home, self._layers, self._staging.directory, self._trash.directory):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.reflink = probe_reflink(self._layers)  # False on a full filesystem: the store must still open
        method = options.get("copy", "auto")
        if method == "reflink" and not self.reflink:
            raise DriverNotSupported(
                f"vfs option copy=reflink: the filesystem of {self.home} cannot clone files (FICLONE); "
                "use copy=auto or a btrfs/xfs home"
            )
        if method == "auto":
            method = "reflink" if self.reflink else "copy_file_range"
        self.copy_method = method

    # -- the hooks ---------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """vfs translates ownership through the ID maps; it shares data only where reflinks work."""
        return Capabilities(idmap=True, reflink=self.reflink)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Copy `parent` (or make an empty root) into a staging directory, then rename it into place."""
        check_storage_options("vfs", id, opts.storage_opts, ())
        if self._path(id).exists():
            raise LayerExists(f"layer {id} already exists in driver vfs")
        if parent is not None and not self._path(parent).is_dir():
            raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver vfs")
        try:
            with self._staging.reserve(id) as entry:
                if parent is None:
                    os.chmod(entry.path, 0o755)
                    os.chown(entry.path, *self.id_maps.root_pair)
                else:
                    try:
                        copy_tree(self._path(parent), entry.path, method=self.copy_method)
                    except FileNotFoundError as exc:
                        if not self._path(parent).is_dir():
                            raise LayerNotFound(f"parent layer {parent} of {id} was removed during create") from exc
                        raise
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
            raise LayerNotFound(f"layer {id} does not exist in driver vfs") from None

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """A vfs layer is always visible: return its directory."""
        path = self._path(id)
        if not path.is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver vfs")
        return str(path)

    @hookimpl
    def put(self, id: str) -> None:
        """Nothing to tear down."""

    @hookimpl
    def exists(self, id: str) -> bool:
        """A layer exists when its directory does (it appears and disappears by rename)."""
        return is_valid_layer_id(id) and self._path(id).is_dir()

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Backing filesystem, layer count, copy method."""
        count = sum(1 for name in os.listdir(self._layers) if not name.startswith("."))
        return [
            ("Backing Filesystem", backing_filesystem(self.home) or "unknown"),
            ("Layers", str(count)),
            ("Reflink", "supported" if self.reflink else "not supported"),
            ("Copy Method", self.copy_method),
        ]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """The layer's directory."""
        path = self._path(id)
        if not path.is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver vfs")
        return {"dir": str(path)}

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete what killed processes left in staging/ and trash/."""
        return self._sweep()

    @hookimpl
    def cleanup(self) -> None:
        """vfs mounts nothing: nothing to release."""

    # -- helpers -----------------------------------------------------------

    def _path(self, id: str) -> Path:
        check_layer_id("vfs", id)
        return self._layers / id

    def _sweep(self) -> list[str]:
        return [f"vfs staging leftover {n}" for n in self._staging.sweep()] + [
            f"vfs trash leftover {n}" for n in self._trash.sweep()
        ]
