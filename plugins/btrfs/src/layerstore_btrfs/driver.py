"""The btrfs storage driver's hooks: one subvolume per layer, a child is a writable snapshot of its parent.

Where layers live and which names are orphans is `layerstore_btrfs.subvolumes`;
support detection is `layerstore_btrfs.probes`, size limits
`layerstore_btrfs.quota`, the ioctls `layerstore_btrfs._btrfs`.  A layer
appears and disappears with one rename (out of staging/, into trash/): a
crash leaves at worst an unheld subvolume there, deleted when the driver
next opens or by ``gc``.  On a completely full filesystem, where neither a
lock file nor a rename fits, removal deletes the subvolume in place
(deleting needs no space).  Opening an existing home writes nothing except
that deletion of leftovers; the one-time support probe is recorded in
``probed`` when the home is made.  Snapshots do not depend on their origin
in btrfs, but the contract keeps a parent until its children are gone: the
facade refuses that removal.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerstore import Capabilities, hookimpl
from layerstore.errors import LayerExists, LayerNotFound, LayerStoreError, StorageFull
from layerstore.kit import atomic_write, check_options, check_storage_options, fsync_dir, remove_tree
from layerstore.mountinfo import mount_of
from layerstore.sizes import format_size, parse_size

from . import _btrfs
from .probes import check_backing_filesystem, check_subvolumes
from .quota import Quota
from .subvolumes import Subvolumes, destroy

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
        check_backing_filesystem(self.home)
        self._layers = Subvolumes(self.home)
        if not (self.home / _PROBED).is_file():
            self._init_home()
        self._fs_uuid = _btrfs.filesystem_uuid(self.home)
        self._quota = Quota(self.home, self._fs_uuid)
        # What killed processes left; one that resists stays for gc to report.
        with contextlib.suppress(OSError):
            self._layers.sweep()

    def __repr__(self) -> str:
        return f"<BtrfsDriver at {self.home}>"

    def _init_home(self) -> None:
        """Make the layout and run the support probe once, under the lock; record that it passed."""
        self._layers.make_directories()
        with self._layers.locked():
            if (self.home / _PROBED).is_file():
                return  # another process initialised the home meanwhile
            check_subvolumes(self.home, self._layers.staging)
            atomic_write(self.home / _PROBED, "subvolumes can be created and deleted here\n", durable=False)

    def quota_enabled(self) -> bool:
        """True when quota groups are enabled on the filesystem of the driver home."""
        return self._quota.enabled()

    # -- housekeeping ----------------------------------------------------------------------------

    @hookimpl
    def orphans(self) -> list[str]:
        """Staging/trash subvolumes nobody holds, and records or temporary files of layers that do not exist."""
        scratch = self._layers.unheld()
        with self._layers.locked():
            records = [path.relative_to(self.home).as_posix() for path in self._layers.record_orphans()]
        return [f"btrfs {name}" for name in scratch + records]

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete unheld staging/trash entries and records of layers that do not exist."""
        removed = [f"btrfs {name}" for name in self._layers.sweep()]
        with self._layers.locked():
            for path in self._layers.record_orphans():
                if path.is_dir():
                    remove_tree(path)
                else:
                    path.unlink(missing_ok=True)
                removed.append(f"btrfs {path.relative_to(self.home)}")
        return removed

    # -- hooks -----------------------------------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Quotas (qgroups), ID-mapped roots, read-only layers (subvolume flag), children share extents."""
        return Capabilities(quota=True, idmap=True, reflink=True, read_only_layers=True)

    @hookimpl
    def exists(self, id: str) -> bool:
        """True when ``subvolumes/<id>`` exists."""
        return self._layers.exists(id)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create layer `id`: an empty subvolume, or a writable snapshot of `parent`; apply a ``size`` quota."""
        check_storage_options("btrfs", id, opts.storage_opts, STORAGE_OPTIONS)
        size = parse_size(opts.storage_opts["size"], what="size option") if "size" in opts.storage_opts else None
        layers = self._layers
        target = layers.path(id)
        # The lock keeps gc from taking the records of a layer not yet published for orphans.
        with layers.locked():
            if layers.exists(id):
                raise LayerExists(f"layer {id} already exists in driver btrfs")
            if parent is not None and not layers.exists(parent):
                raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver btrfs")
            try:
                with layers.staging.reserve(id, make_dir=False) as entry:
                    if parent is None:
                        _btrfs.create_subvolume(entry.path.parent, entry.path.name)
                        os.chown(entry.path, *self.id_maps.root_pair)
                        os.chmod(entry.path, 0o755)
                    else:
                        _btrfs.snapshot_subvolume(layers.path(parent), entry.path.parent, entry.path.name)
                    if size is not None:
                        self._quota.limit(entry.path, size)
                    layers.record(id, parent, read_only=opts.read_only)
                    entry.publish(target)
            except BaseException as exc:
                layers.forget(id)
                if isinstance(exc, OSError):
                    raise _os_error(exc, f"cannot create layer {id}") from exc
                raise
        # btrfs turns every fsync in a transaction that created or renamed a subvolume into a
        # commit of the whole transaction: left for the import's first fsync, that commit would
        # write the metadata of every file the import adds (0.2 s for 50,000 files, measured).
        # Making the new name durable now commits, synchronously and outside the lock, in about a
        # millisecond.  (BTRFS_IOC_START_SYNC, the asynchronous way, hung on Linux 6.18: see the README.)
        with contextlib.suppress(OSError):  # only a matter of speed: an I/O error shows again at the import's fsync
            fsync_dir(target.parent)

    @hookimpl
    def remove(self, id: str) -> None:
        """Delete layer `id` and every subvolume created inside it (the facade refused it while it has children)."""
        path = self._layers.path(id)
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        try:
            self._discard(path, id)
        except OSError as exc:
            if not os.path.lexists(path):
                with self._layers.locked():
                    self._layers.forget(id)
                raise LayerStoreError(
                    f"btrfs: layer {id} is removed but deleting its subvolume failed ({exc.strerror or exc}); "
                    "`layerstore gc` deletes what is left"
                ) from exc
            if exc.errno not in _SPACE_ERRNOS:
                raise _os_error(exc, f"cannot remove layer {id}") from exc
            # A full filesystem: even a rename needs space here, deleting does not.
            try:
                destroy(path)
            except OSError as again:
                raise _os_error(again, f"cannot remove layer {id}") from again
        with self._layers.locked():
            self._layers.forget(id)

    def _discard(self, path: Path, id: str) -> None:
        """Rename the layer into trash/ and delete it there."""
        try:
            self._layers.trash.discard(path, id)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # Moving a read-only subvolume would rewrite its "..": make it writable first.
            _btrfs.set_read_only(path, False)
            self._layers.trash.discard(path, id)

    @hookimpl(wrapper=True)
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> Generator[None, int, int]:
        """Around whichever implementation applies the diff: afterwards, freeze a read-only layer.

        The subvolume becomes read-only (its snapshots stay writable), so the
        mounted tree of an image layer refuses writes with ``EROFS``.
        """
        size = yield
        if self._layers.is_read_only(id):
            try:
                _btrfs.set_read_only(self._layers.path(id))
            except OSError as exc:
                raise _os_error(exc, f"cannot make layer {id} read-only") from exc
        return size

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Return the layer's subvolume path: it already holds the full tree, nothing is mounted."""
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        return str(self._layers.path(id))

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
            ("Layers", str(self._layers.count())),
        ]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """The layer's subvolume path and ID, its parent, and its quota limit when one is set."""
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
        path = self._layers.path(id)
        subvol_id = _btrfs.subvolume_id(path)
        result = {"path": str(path), "subvolume_id": str(subvol_id), "parent": self._layers.parent_of(id) or ""}
        limit = self._quota.limit_of(subvol_id)
        if limit is not None:
            result["quota"] = str(limit)
        return result


def _os_error(exc: OSError, what: str) -> LayerStoreError:
    if exc.errno in _SPACE_ERRNOS:
        return StorageFull(f"btrfs: {what}: {exc.strerror} ({exc.filename})")
    return LayerStoreError(f"btrfs: {what}: {exc}")


def _mount_source(path: Path) -> str:
    """The device of the longest btrfs mount point containing `path` (from /proc/self/mountinfo)."""
    entry = mount_of(path, fstype="btrfs")
    return entry.source if entry is not None else "unknown"
