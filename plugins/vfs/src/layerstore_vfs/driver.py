"""The vfs driver: each layer is a plain directory holding a full copy of its parent.

Layout under the driver home::

    dir/<id>                   the layer's tree (what `get` returns)
    dir/.tmp-<id>-<random>     a layer being created (renamed to dir/<id> when complete)
    dir/.trash-<id>-<random>   a layer being removed (renamed away first, then deleted)
    parents/<id>               the parent's ID ("" for a base layer)
    children/<parent>/<id>     marks <id> as built on <parent>; removal of <parent> checks it

Creation and removal rename whole directories, so `exists` never sees a
half-copied or half-deleted layer.  Whoever works on a ``.tmp-`` or
``.trash-`` directory holds an ``flock`` on it; at start-up the driver deletes
the ones nobody holds (left by a killed process).

diff, apply_diff, changes and diff_size come from `layerstore.naivediff`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import Capabilities, hookimpl
from layerstore.config import backing_filesystem
from layerstore.errors import (
    ConfigError,
    DriverNotSupported,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    StorageFull,
)
from layerstore.fstree import remove_tree_quietly

from ._copy import COPY_METHODS, TreeCopier, probe_reflink

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from layerstore import CreateOpts, IDMappings

__all__ = ["VfsDriver"]

_TMP = ".tmp-"
_TRASH = ".trash-"
_OPTIONS = {"copy": ("auto", *COPY_METHODS)}


class VfsDriver:
    """The vfs storage driver (factory and plugin object).

    ``VfsDriver(home, options, id_maps)``.  Options: ``copy`` = ``auto``
    (default: reflink where the filesystem supports it, else
    ``copy_file_range``), or one of ``reflink``, ``copy_file_range``,
    ``sendfile``, ``read`` to force a data copy method.
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        for key, value in options.items():
            allowed = _OPTIONS.get(key)
            if allowed is None:
                raise ConfigError(f"unknown option {key!r} for driver vfs; known options: {', '.join(_OPTIONS)}")
            if value not in allowed:
                raise ConfigError(f"bad value {value!r} for vfs option {key!r}; choose one of: {', '.join(allowed)}")
        self.home = Path(home)
        self.id_maps = id_maps
        self._layers = self.home / "dir"
        self._parents = self.home / "parents"
        self._children = self.home / "children"
        for directory in (self.home, self._layers, self._parents, self._children):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.reflink = probe_reflink(str(self._layers))
        except OSError:  # no room for the probe files (a full disk): opening the store must still work
            self.reflink = False
        method = options.get("copy", "auto")
        if method == "reflink" and not self.reflink:
            raise DriverNotSupported(
                f"vfs option copy=reflink: the filesystem of {self.home} cannot clone files (FICLONE); "
                "use copy=auto or a btrfs/xfs home"
            )
        if method == "auto":
            method = "reflink" if self.reflink else "copy_file_range"
        self.copy_method = method
        self._remove_leftovers()

    # -- the hooks ---------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """vfs translates ownership through the ID maps; it shares data only where reflinks work."""
        return Capabilities(idmap=True, reflink=self.reflink)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Copy `parent` (or make an empty root) into a temporary directory, then rename it into place."""
        if opts.storage_opts:
            key = sorted(opts.storage_opts)[0]
            raise ConfigError(
                f"unknown storage option {key!r} for layer {id}: the vfs driver takes no per-layer options "
                "(it has no quota support)"
            )
        if self._path(id).exists():
            raise LayerExists(f"layer {id} already exists in driver vfs")
        if parent is not None and not self._path(parent).is_dir():
            raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver vfs")
        (self._parents / id).write_text(parent or "")
        if parent is not None:
            marker_dir = self._children / parent
            marker_dir.mkdir(exist_ok=True)
            (marker_dir / id).touch()
        try:
            with self._locked_tmp(id) as tmp:
                if parent is None:
                    os.chmod(tmp, 0o755)
                    uid, gid = self.id_maps.root_pair()
                    os.chown(tmp, uid, gid)
                else:
                    copier = TreeCopier(self.copy_method)
                    try:
                        copier.copy_tree(str(self._path(parent)), tmp)
                    except FileNotFoundError as exc:
                        if not self._path(parent).is_dir():
                            raise LayerNotFound(f"parent layer {parent} of {id} was removed during create") from exc
                        raise
                os.rename(tmp, self._path(id))
        except BaseException as exc:
            self._forget(id, parent)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left to create layer {id} in {self.home}: {exc.strerror}") from exc
            raise

    @hookimpl
    def remove(self, id: str) -> None:
        """Refuse a layer with children; else rename it to a trash name and delete it."""
        path = self._path(id)
        if not path.is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver vfs")
        child = self._live_child(id)
        if child is not None:
            raise LayerInUse(f"layer {id} is the parent of layer {child}; remove {child} first")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            trash = self._layers / f"{_TRASH}{id}-{secrets.token_hex(4)}"
            os.rename(path, trash)
            self._forget(id, self._parent_of(id))
            remove_tree_quietly(trash, _log.warning)  # renamed away: removed; the sweeps retry leftovers
        finally:
            os.close(fd)

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
        return self._path(id).is_dir()

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
        """The layer's directory and its parent."""
        path = self._path(id)
        if not path.is_dir():
            raise LayerNotFound(f"layer {id} does not exist in driver vfs")
        return {"dir": str(path), "parent": self._parent_of(id) or ""}

    @hookimpl
    def cleanup(self) -> None:
        """vfs mounts nothing: nothing to release."""

    # -- helpers -----------------------------------------------------------

    def _path(self, id: str) -> Path:
        return self._layers / id

    def _parent_of(self, id: str) -> str | None:
        try:
            return (self._parents / id).read_text() or None
        except FileNotFoundError:
            return None

    def _forget(self, id: str, parent: str | None) -> None:
        if parent is not None:
            with contextlib.suppress(FileNotFoundError):
                (self._children / parent / id).unlink()
            with contextlib.suppress(OSError):  # not empty: other children remain
                (self._children / parent).rmdir()
        (self._parents / id).unlink(missing_ok=True)

    def _live_child(self, id: str) -> str | None:
        """A child of `id` that exists or is being created; stale marks (from a killed process) are dropped."""
        try:
            children = os.listdir(self._children / id)
        except FileNotFoundError:
            return None
        in_progress = {_layer_of(name, _TMP) for name in os.listdir(self._layers) if name.startswith(_TMP)}
        for child in sorted(children):
            if self._path(child).is_dir() or child in in_progress:
                return child
            (self._children / id / child).unlink(missing_ok=True)
        return None

    @contextlib.contextmanager
    def _locked_tmp(self, id: str) -> Iterator[str]:
        tmp = str(self._layers / f"{_TMP}{id}-{secrets.token_hex(4)}")
        os.mkdir(tmp, 0o700)
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield tmp
            except BaseException:
                if os.path.lexists(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            os.close(fd)

    def _remove_leftovers(self) -> None:
        for name in os.listdir(self._layers):
            if not name.startswith((_TMP, _TRASH)):
                continue
            path = self._layers / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # its owner finished meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is still working on it
                remove_tree_quietly(path, _log.warning)
            finally:
                os.close(fd)


def _layer_of(name: str, prefix: str) -> str:
    """The layer ID inside a ``.tmp-<id>-<random>`` name."""
    return name[len(prefix) :].rpartition("-")[0]
