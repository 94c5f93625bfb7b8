"""The btrfs storage driver: one subvolume per layer, a child is a writable snapshot of its parent.

Layout under the driver home::

    subvolumes/<id>           the layer (a subvolume); it exists when this path does
    parents/<id>              the parent's ID ("" for a base layer), for `metadata`
    readonly/<id>             marker: made read-only once its diff is applied
    staging/                  layers being created (renamed into subvolumes/ when complete)
    trash/<id>.<rand>         layers being deleted (renamed out of subvolumes/ first); the remover
                              holds a flock on the subvolume's root directory until it is gone
    lock                      flock held while layers are created, and while removal moves a layer to trash
    probed                    the answer of the one-time support probe (written when the home is made)

A layer therefore appears and disappears with one rename: a crash leaves at
worst a subvolume in staging/ or trash/, deleted when the driver next opens
(staging only ever holds entries of the process holding ``lock``; a trash
entry is deleted by whoever holds the flock on its directory).  Removal
creates no file, so it works on a completely full filesystem.  Every name is attributable:
records of a layer whose subvolume is gone, temporary record files and
unheld scratch entries are orphans that ``gc`` removes and ``check`` lists.
Opening an existing home writes nothing except that deletion of leftovers.
Snapshots do not depend on their origin in btrfs, but the contract keeps a
parent until its children are gone: the facade refuses that removal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Generator, Iterator, Mapping
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
from layerstore.kit import atomic_write, check_options, check_storage_options, is_atomic_temporary
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


def _valid_id(layer_id: str) -> bool:
    return bool(layer_id) and "/" not in layer_id and "\0" not in layer_id and not layer_id.startswith(".")


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
        self._staging = self.home / "staging"
        self._trash = self.home / "trash"
        self._readonly = self.home / "readonly"
        if not (self.home / _PROBED).is_file():
            self._init_home()
        self._fs_uuid = _btrfs.filesystem_uuid(self.home)
        self._sweep()

    def __repr__(self) -> str:
        return f"<BtrfsDriver at {self.home}>"

    # -- support detection and housekeeping ------------------------------------------------------

    def _init_home(self) -> None:
        """Make the layout and run the support probe once, under the lock; record that it passed."""
        for d in (self._subvolumes, self._parents, self._staging, self._trash, self._readonly):
            d.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if (self.home / _PROBED).is_file():
                return  # another process initialised the home meanwhile
            self._probe()
            atomic_write(self.home / _PROBED, "subvolumes can be created and deleted here\n", durable=False)

    def _probe(self) -> None:
        """Create and delete a subvolume in staging/, so that an unprivileged process is told why here.

        Runs with the lock held, so no sweep of another process sees the probe's subvolume.
        """
        name = f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            _btrfs.create_subvolume(self._staging, name)
        except OSError as exc:
            raise DriverNotSupported(f"btrfs: cannot create subvolumes in {self.home}: {exc.strerror}") from None
        try:
            _btrfs.delete_subvolume(self._staging, name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.rmdir(self._staging / name)
            raise DriverNotSupported(
                f"btrfs: cannot delete subvolumes in {self.home}: {exc.strerror} "
                "(run as root, or mount the filesystem with user_subvol_rm_allowed)"
            ) from None

    def _sweep(self) -> list[str]:
        """Delete what killed processes left in staging/ and trash/; return the names deleted.

        Staging entries are listed under the lock (a live create holds it all
        along, so every entry seen is dead); a trash entry is deleted only by
        whoever holds its lock file, so a live removal is never disturbed.
        """
        with self._locked():
            staged = list(self._staging.iterdir())
            trashed = list(self._trash.iterdir())
        removed = []
        for path in staged:
            with contextlib.suppress(OSError):
                self._destroy(path)
                removed.append(f"staging/{path.name}")
        for path in trashed:
            fd = _claim(path, wait=False)
            if fd is None:
                continue  # its remover is alive, or it is gone already
            try:
                self._destroy(path)
                removed.append(f"trash/{path.name}")
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed

    def _record_orphans(self) -> list[Path]:
        """Records and temporary files that belong to no layer (call with the lock held)."""
        found = []
        for directory in (self._parents, self._readonly):
            for entry in directory.iterdir():
                if is_atomic_temporary(entry.name) or not self.exists(entry.name):
                    found.append(entry)
        return found

    def _unheld_scratch(self) -> list[Path]:
        """Staging and trash entries no live process holds (call with the lock held)."""
        found = list(self._staging.iterdir())
        for path in self._trash.iterdir():
            fd = _claim(path, wait=False)
            if fd is not None:
                found.append(path)
                os.close(fd)
        return found

    @hookimpl
    def orphans(self) -> list[str]:
        """Staging/trash subvolumes nobody holds, and records or temporary files of layers that do not exist."""
        with self._locked():
            paths = self._unheld_scratch() + self._record_orphans()
        return [f"btrfs {path.relative_to(self.home)}" for path in paths]

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete unheld staging/trash entries and records of layers that do not exist."""
        removed = [f"btrfs {name}" for name in self._sweep()]
        with self._locked():
            for path in self._record_orphans():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(f"btrfs {path.relative_to(self.home)}")
        return removed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.home / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _path(self, layer_id: str) -> Path:
        return self._subvolumes / layer_id

    def _destroy(self, path: Path) -> None:
        """Delete subvolume `path` with every subvolume nested in it, deepest first."""
        if not os.path.lexists(path):
            return
        if not _btrfs.is_subvolume(path):
            shutil.rmtree(path)  # a plain directory: a layer record a crash cut short
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
        return _valid_id(id) and os.path.isdir(self._path(id))

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create layer `id`: an empty subvolume, or a writable snapshot of `parent`; apply a ``size`` quota."""
        check_storage_options("btrfs", id, opts.storage_opts, STORAGE_OPTIONS)
        size = parse_size(opts.storage_opts["size"], what="size option") if "size" in opts.storage_opts else None
        if not _valid_id(id):
            raise LayerStoreError(f"btrfs: invalid layer ID {id!r}")
        with self._locked():
            if self.exists(id):
                raise LayerExists(f"layer {id} already exists in driver btrfs")
            if parent is not None and not self.exists(parent):
                raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver btrfs")
            staged = self._staging / f"{id}.{secrets.token_hex(4)}"
            try:
                if parent is None:
                    _btrfs.create_subvolume(self._staging, staged.name)
                    os.chown(staged, *self.id_maps.root_pair)
                    os.chmod(staged, 0o755)
                else:
                    _btrfs.snapshot_subvolume(self._path(parent), self._staging, staged.name)
                if size is not None:
                    self._limit(staged, size)
                atomic_write(self._parents / id, parent or "", durable=False)
                if opts.read_only:
                    (self._readonly / id).touch()
                os.rename(staged, self._path(id))
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    self._destroy(staged)
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
        with self._locked():
            if not self.exists(id):
                raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
            trashed = self._trash / f"{id}.{secrets.token_hex(4)}"
            claim = _claim(self._path(id), wait=True)  # the same directory once it is renamed into trash/
            if claim is None:
                raise LayerNotFound(f"layer {id} does not exist in driver btrfs")
            try:
                try:
                    self._move_to_trash(id, trashed)
                except OSError as exc:
                    if exc.errno not in _SPACE_ERRNOS:
                        raise
                    # A full filesystem: even a rename needs space here, deleting does not.
                    self._destroy(self._path(id))
                    self._forget(id)
                    return
                self._forget(id)
            finally:
                if not os.path.lexists(trashed):
                    os.close(claim)
        try:
            self._destroy(trashed)
        except OSError as exc:
            raise LayerStoreError(
                f"btrfs: layer {id} is removed but deleting its subvolume {trashed} failed ({exc}); "
                "the driver retries when it next opens"
            ) from exc
        finally:
            os.close(claim)

    def _move_to_trash(self, id: str, trashed: Path) -> None:
        try:
            os.rename(self._path(id), trashed)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            # Moving a read-only subvolume would rewrite its "..": make it writable first.
            _btrfs.set_read_only(self._path(id), False)
            os.rename(self._path(id), trashed)

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


def _claim(entry: Path, *, wait: bool) -> int | None:
    """Lock the directory `entry` (a trash entry) with flock; its fd, or None when another holds it or it is gone."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mount_source(path: Path) -> str:
    """The device of the longest btrfs mount point containing `path` (from /proc/self/mountinfo)."""
    entry = mount_of(path, fstype="btrfs")
    return entry.source if entry is not None else "unknown"
