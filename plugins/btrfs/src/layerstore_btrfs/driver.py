"""The btrfs storage driver: one subvolume per layer, a child is a writable snapshot of its parent.

Layout under the driver home::

    subvolumes/<id>           the layer (a subvolume); it exists when this path does
    parents/<id>              the parent's ID ("" for a base layer), for `metadata`
    readonly/<id>             marker: made read-only once its diff is applied
    staging/<id>.<rand>       layers being created, renamed into subvolumes/ when complete
    trash/<id>.<rand>         layers being deleted (renamed out of subvolumes/ first)
    lock                      flock held while layers are created and records are collected
    probed                    the answer of the one-time support probe (written when the home is made)

staging/ and trash/ are `layerstore.kit.ScratchArea` directories: a
subvolume is created inside a directory and renamed like one, so every entry
carries a lock file (``<entry>.lock``, flock-held by its owner from before
the entry exists until it is gone).  A layer therefore appears and
disappears with one rename: a crash leaves at worst an unheld subvolume in
staging/ or trash/, deleted when the driver next opens or by ``gc``.  On a
completely full filesystem, where neither a lock file nor a rename fits,
removal deletes the subvolume in place (deleting needs no space).  Every
name is attributable: records of a layer whose subvolume is gone, temporary
record files and unheld scratch entries are orphans that ``gc`` removes and
``check`` lists.  Opening an existing home writes nothing except that
deletion of leftovers.
Snapshots do not depend on their origin in btrfs, but the contract keeps a
parent until its children are gone: the facade refuses that removal.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerstore import Capabilities, hookimpl
from layerstore.errors import (
    DriverNotSupported,
    LayerExists,
    LayerNotFound,
    LayerStoreError,
    StorageFull,
)
from layerstore.kit import (
    ScratchArea,
    atomic_write,
    check_layer_id,
    check_options,
    check_storage_options,
    held_lock,
    is_atomic_temporary,
    is_valid_layer_id,
    remove_tree,
)
from layerstore.mountinfo import mount_of
from layerstore.process import run_command
from layerstore.sizes import format_size, parse_size

from . import _btrfs

if TYPE_CHECKING:
    from layerstore import CreateOpts, IDMappings

__all__ = ["STORAGE_OPTIONS", "BtrfsDriver"]

STORAGE_OPTIONS = frozenset({"size"})
"""Per-layer storage options `create` accepts: ``size`` (a qgroup limit on the layer's referenced bytes)."""

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_PROBED = "probed"


class BtrfsDriver:
    """Layers as btrfs subvolumes; the factory of the ``btrfs`` entry point.

    ``BtrfsDriver(home, options, id_maps)`` raises `DriverNotSupported` when
    `home` is not on btrfs or subvolumes cannot be created and deleted there,
    and `ConfigError` for any driver option (it takes none).
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options("btrfs", options, {})
        self.home = Path(home)
        self.id_maps = id_maps
        _check_backing_filesystem(self.home)
        self._subvolumes = self.home / "subvolumes"
        self._parents = self.home / "parents"
        self._staging = ScratchArea(self.home / "staging", delete=self._destroy)
        self._trash = ScratchArea(self.home / "trash", delete=self._destroy)
        self._readonly = self.home / "readonly"
        if not (self.home / _PROBED).is_file():
            self._init_home()
        self._fs_uuid = _btrfs.filesystem_uuid(self.home)
        # What killed processes left; one that resists stays for gc to report.
        with contextlib.suppress(OSError):
            self._sweep()

    def __repr__(self) -> str:
        return f"<BtrfsDriver at {self.home}>"

    # -- support detection and housekeeping ------------------------------------------------------

    def _init_home(self) -> None:
        """Make the layout and run the support probe once, under the lock; record that it passed."""
        for d in (self._subvolumes, self._parents, self._staging.directory, self._trash.directory, self._readonly):
            d.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if (self.home / _PROBED).is_file():
                return  # another process initialised the home meanwhile
            self._probe()
            atomic_write(self.home / _PROBED, "subvolumes can be created and deleted here\n", durable=False)

    def _probe(self) -> None:
        """Create and delete a subvolume in staging/, so that an unprivileged process is told why here."""
        created = False
        try:
            with self._staging.reserve("probe", make_dir=False) as entry:
                _btrfs.create_subvolume(entry.path.parent, entry.path.name)
                created = True
                try:
                    _btrfs.delete_subvolume(entry.path.parent, entry.path.name)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)  # an empty subvolume, where the kernel lets users rmdir it
                    raise
        except OSError as exc:
            if not created:
                raise DriverNotSupported(f"btrfs: cannot create subvolumes in {self.home}: {exc.strerror}") from None
            raise DriverNotSupported(
                f"btrfs: cannot delete subvolumes in {self.home}: {exc.strerror} "
                "(run as root, or mount the filesystem with user_subvol_rm_allowed)"
            ) from None

    def _sweep(self) -> list[str]:
        """Delete the staging/ and trash/ entries nobody holds (left by killed processes); return them."""
        return [f"staging/{name}" for name in self._staging.sweep()] + [
            f"trash/{name}" for name in self._trash.sweep()
        ]

    def _record_orphans(self) -> list[Path]:
        """Records and temporary files that belong to no layer (call with the lock held)."""
        found = []
        for directory in (self._parents, self._readonly):
            for entry in directory.iterdir():
                if is_atomic_temporary(entry.name) or not self.exists(entry.name):
                    found.append(entry)
        return found

    @hookimpl
    def orphans(self) -> list[str]:
        """Staging/trash subvolumes nobody holds, and records or temporary files of layers that do not exist."""
        scratch = [f"staging/{name}" for name in self._staging.unheld()]
        scratch += [f"trash/{name}" for name in self._trash.unheld()]
        with self._locked():
            records = [path.relative_to(self.home).as_posix() for path in self._record_orphans()]
        return [f"btrfs {name}" for name in scratch + records]

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete unheld staging/trash entries and records of layers that do not exist."""
        removed = [f"btrfs {name}" for name in self._sweep()]
        with self._locked():
            for path in self._record_orphans():
                if path.is_dir():
                    remove_tree(path)
                else:
                    path.unlink(missing_ok=True)
                removed.append(f"btrfs {path.relative_to(self.home)}")
        return removed

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return held_lock(self.home / "lock")

    def _path(self, layer_id: str) -> Path:
        check_layer_id("btrfs", layer_id)
        return self._subvolumes / layer_id

    def _destroy(self, path: Path) -> None:
        """Delete subvolume `path` with every subvolume nested in it, deepest first."""
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

    # -- quota -----------------------------------------------------------------------------------

    def _qgroups_dir(self) -> Path:
        return Path("/sys/fs/btrfs") / self._fs_uuid / "qgroups"

    def quota_enabled(self) -> bool:
        """True when quota groups are enabled on the filesystem of the driver home."""
        return self._qgroups_dir().is_dir()

    def _limit(self, path: Path, size: int) -> None:
        if not self.quota_enabled():
            run_command(["btrfs", "quota", "enable", str(self.home)])
        run_command(["btrfs", "qgroup", "limit", str(size), str(path)])

    # -- hooks -----------------------------------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Quotas (qgroups), ID-mapped roots, read-only layers (subvolume flag), children share extents."""
        return Capabilities(quota=True, idmap=True, reflink=True, read_only_layers=True)

    @hookimpl
    def exists(self, id: str) -> bool:
        """True when ``subvolumes/<id>`` exists."""
        return is_valid_layer_id(id) and os.path.isdir(self._path(id))

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create layer `id`: an empty subvolume, or a writable snapshot of `parent`; apply a ``size`` quota."""
        check_storage_options("btrfs", id, opts.storage_opts, STORAGE_OPTIONS)
        size = parse_size(opts.storage_opts["size"], what="size option") if "size" in opts.storage_opts else None
        target = self._path(id)
        # The lock keeps gc from taking the records of a layer not yet published for orphans.
        with self._locked():
            if self.exists(id):
                raise LayerExists(f"layer {id} already exists in driver btrfs")
            if parent is not None and not self.exists(parent):
                raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver btrfs")
            try:
                with self._staging.reserve(id, make_dir=False) as entry:
                    if parent is None:
                        _btrfs.create_subvolume(entry.path.parent, entry.path.name)
                        os.chown(entry.path, *self.id_maps.root_pair)
                        os.chmod(entry.path, 0o755)
                    else:
                        _btrfs.snapshot_subvolume(self._path(parent), entry.path.parent, entry.path.name)
                    if size is not None:
                        self._limit(entry.path, size)
                    atomic_write(self._parents / id, parent or "", durable=False)
                    if opts.read_only:
                        (self._readonly / id).touch()
                    entry.publish(target)
            except BaseException as exc:
                self._forget(id)
                if isinstance(exc, OSError):
                    raise _os_error(exc, f"cannot create layer {id}") from exc
                raise

    def _forget(self, id: str) -> None:
        """Delete the records of layer `id` (call with the lock held)."""
        (self._parents / id).unlink(missing_ok=True)
        (self._readonly / id).unlink(missing_ok=True)

    def _parent_of(self, id: str) -> str | None:
        try:
            return (self._parents / id).read_text() or None
        except FileNotFoundError:
            return None

    @hookimpl
    def remove(self, id: str) -> None:
        """Delete layer `id` and every subvolume created inside it (the facade refused it while it has children)."""
        path = self._path(id)
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        try:
            self._discard(path, id)
        except OSError as exc:
            if not os.path.lexists(path):
                with self._locked():
                    self._forget(id)
                raise LayerStoreError(
                    f"btrfs: layer {id} is removed but deleting its subvolume failed ({exc.strerror or exc}); "
                    "`layerstore gc` deletes what is left"
                ) from exc
            if exc.errno not in _SPACE_ERRNOS:
                raise _os_error(exc, f"cannot remove layer {id}") from exc
            # A full filesystem: even a rename needs space here, deleting does not.
            try:
                self._destroy(path)
            except OSError as again:
                raise _os_error(again, f"cannot remove layer {id}") from again
        with self._locked():
            self._forget(id)

    def _discard(self, path: Path, id: str) -> None:
        """Rename the layer into trash/ and delete it there."""
        try:
            self._trash.discard(path, id)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # Moving a read-only subvolume would rewrite its "..": make it writable first.
            _btrfs.set_read_only(path, False)
            self._trash.discard(path, id)

    @hookimpl(wrapper=True)
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> Generator[None, int, int]:
        """Around whichever implementation applies the diff: afterwards, freeze a read-only layer.

        The subvolume becomes read-only (its snapshots stay writable), so the
        mounted tree of an image layer refuses writes with ``EROFS``.
        """
        size = yield
        if os.path.exists(self._readonly / id):
            try:
                _btrfs.set_read_only(self._path(id))
            except OSError as exc:
                raise _os_error(exc, f"cannot make layer {id} read-only") from exc
        return size

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Return the layer's subvolume path: it already holds the full tree, nothing is mounted."""
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        return str(self._path(id))

    @hookimpl
    def put(self, id: str) -> None:
        """Nothing to undo: `get` mounts nothing."""

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Backing device, filesystem UUID, space, quota state and the number of layers."""
        st = os.statvfs(self.home)
        return [
            ("Backing filesystem", "btrfs"),
            ("Device", _mount_source(self.home)),
            ("Filesystem UUID", self._fs_uuid),
            ("Size", format_size(st.f_blocks * st.f_frsize, binary=True)),
            ("Used", format_size((st.f_blocks - st.f_bfree) * st.f_frsize, binary=True)),
            ("Free (estimated)", format_size(st.f_bavail * st.f_frsize, binary=True)),
            ("Quota", "enabled" if self.quota_enabled() else "disabled"),
            ("Layers", str(sum(1 for _ in self._subvolumes.iterdir()))),
        ]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """The layer's subvolume path and ID, its parent, and its quota limit when one is set."""
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        path = self._path(id)
        subvol_id = _btrfs.subvolume_id(path)
        result = {"path": str(path), "subvolume_id": str(subvol_id), "parent": self._parent_of(id) or ""}
        limit = self._qgroups_dir() / f"0_{subvol_id}" / "max_referenced"
        with contextlib.suppress(OSError, ValueError):
            value = int(limit.read_text())
            if value:
                result["quota"] = str(value)
        return result


def _check_backing_filesystem(home: Path) -> None:
    """Raise `DriverNotSupported` unless `home` (or, before it exists, its nearest ancestor) is on btrfs."""
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        magic, name = _btrfs.filesystem_type(probe)
    except OSError as exc:
        raise DriverNotSupported(f"btrfs: cannot inspect the filesystem of {home}: {exc.strerror}") from None
    if magic != _btrfs.BTRFS_SUPER_MAGIC:
        raise DriverNotSupported(f"btrfs: {home} is on {name}, not btrfs")


def _os_error(exc: OSError, what: str) -> LayerStoreError:
    if exc.errno in _SPACE_ERRNOS:
        return StorageFull(f"btrfs: {what}: {exc.strerror} ({exc.filename})")
    return LayerStoreError(f"btrfs: {what}: {exc}")


def _mount_source(path: Path) -> str:
    """The device of the longest btrfs mount point containing `path` (from /proc/self/mountinfo)."""
    entry = mount_of(path, fstype="btrfs")
    return entry.source if entry is not None else "unknown"
