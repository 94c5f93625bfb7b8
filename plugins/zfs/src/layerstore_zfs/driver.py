"""The ZFS storage driver.

Layout: layer ``ID`` is the dataset ``<fsname>/ID`` (IDs that are not valid
dataset name components are stored as ``_<sha256 prefix>``).  A base layer is
``zfs create``; a child is ``zfs snapshot <parent>@layerstore-clone-ID`` plus ``zfs clone``
of that snapshot, and the snapshot is immediately marked for deferred
destruction (``zfs destroy -d``) so that it disappears with its clone and
nothing leaks.  Datasets carry ``canmount=noauto`` and a ``mountpoint`` of
``<home>/mnt/ID``; `get` is ``zfs mount``, `put` is ``zfs unmount`` (legacy
mounts need ``mount -t zfs``, which zfs-fuse does not have).  Diffs come
from the core's generic implementation.

Every object is attributable: a snapshot ``<parent>@layerstore-clone-<child>``
belongs to the clone ``<fsname>/<child>`` whose origin it is (snapshots with
other names are the layer user's own), a mount directory
``<home>/mnt/<name>`` to the dataset ``<fsname>/<name>``, a ``_gc-*``
dataset is a removal that stayed busy.  Anything else (a snapshot left by a
create killed before or after its clone, a mount directory whose dataset a
killed ``destroy`` took) is an orphan: ``check`` lists it, ``gc`` removes
it.  Creates hold ``<home>/lock`` shared from snapshot to clone; ``gc``
holds it exclusively, so it never takes a snapshot a live create needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import hookimpl
from layerstore.capabilities import Capabilities
from layerstore.errors import (
    CommandFailed,
    DriverNotSupported,
    LayerInUse,
    LayerNotFound,
    LayerStoreError,
    StorageFull,
)
from layerstore.kit import check_layer_id, check_options, check_storage_options, held_lock, is_valid_layer_id
from layerstore.sizes import parse_size

from . import _commands as zfs
from ._mounts import ZFS_FSTYPES, holders, is_mounted, mount_of

if TYPE_CHECKING:
    from layerstore.capabilities import CreateOpts
    from layerstore.idtools import IDMappings

__all__ = ["ZfsDriver"]

OPTIONS = frozenset({"fsname"})
STORAGE_OPTIONS = frozenset({"size"})
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_GARBAGE_PREFIX = "_gc-"
_CLONE_SNAPSHOT_PREFIX = "layerstore-clone-"


def _component(layer_id: str) -> str:
    """The dataset name component of a layer ID (``_`` + hash for IDs ZFS would refuse)."""
    if _PLAIN_ID.fullmatch(layer_id):
        return layer_id
    return "_" + hashlib.sha256(layer_id.encode("utf-8", "surrogateescape")).hexdigest()[:48]


class ZfsDriver:
    """Layers as ZFS datasets; children are clones of a snapshot of their parent.

    The factory of the ``zfs`` driver: ``ZfsDriver(home, options, id_maps)``.
    Option ``fsname`` names the parent dataset of the layers; without it the
    dataset that `home` is on is used.  Raises `DriverNotSupported` when the
    zfs tools are missing, the pool is not reachable or no parent dataset is
    known.
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options("zfs", options, dict.fromkeys(OPTIONS))
        for program in ("zfs", "zpool"):
            if shutil.which(program) is None:
                raise DriverNotSupported(f"zfs: {program}: command not found (install OpenZFS or zfs-fuse)")
        self.home = Path(home).absolute()
        self.id_maps = id_maps
        fsname = options.get("fsname", "").strip().strip("/")
        if not fsname:
            entry = mount_of(self.home)
            if entry is None or entry.fstype not in ZFS_FSTYPES:
                on = f" (it is on {entry.fstype} at {entry.mountpoint})" if entry is not None else ""
                raise DriverNotSupported(
                    f"zfs: {self.home} is not on a zfs dataset{on}; set the fsname option to a parent dataset"
                )
            fsname = entry.source
        self.fsname = fsname
        self.pool = fsname.split("/", 1)[0]
        proc = zfs.run(["zpool", "list", "-H", "-o", "name,health", self.pool], check=False)
        if proc.returncode != 0:
            raise DriverNotSupported(f"zfs: the pool is not reachable: {zfs.stderr_of(proc)}")
        proc = zfs.run(["zfs", "list", "-H", "-o", "name", fsname], check=False)
        if proc.returncode != 0:
            raise DriverNotSupported(
                f"zfs: the parent dataset {fsname} is not usable: {zfs.stderr_of(proc)}; "
                "create it or set the fsname option"
            )
        self.mnt = self.home / "mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        # The driver's lock file is part of the home from the start (a fixed name: creating it
        # again is harmless), not something the first locked operation leaves behind.
        self._lock = self.home / "lock"
        os.close(os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def __repr__(self) -> str:
        return f"<ZfsDriver {self.fsname} at {self.home}>"

    def dataset(self, layer_id: str) -> str:
        """The dataset name of layer `layer_id`."""
        return f"{self.fsname}/{_component(layer_id)}"

    def mountpoint(self, layer_id: str) -> Path:
        """Where `get` mounts layer `layer_id`."""
        return self.mnt / _component(layer_id)

    # -- hooks -------------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Quota through the ``quota`` property, ownership mapping, copy-on-write clones; no depth limit."""
        return Capabilities(quota=True, idmap=True, reflink=True)

    @hookimpl
    def exists(self, id: str) -> bool:
        """True if the dataset of layer `id` exists (one ``zfs list``)."""
        if not is_valid_layer_id(id):
            return False
        proc = zfs.run(["zfs", "list", "-H", "-o", "name", self.dataset(id)], check=False)
        if proc.returncode == 0:
            return True
        if zfs.missing(proc):
            return False
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create the dataset of `id`: ``zfs create`` for a base layer, snapshot + clone of `parent` otherwise."""
        check_layer_id("zfs", id)
        check_storage_options("zfs", id, opts.storage_opts, STORAGE_OPTIONS)
        props = ["-o", "canmount=noauto", "-o", f"mountpoint={self.mountpoint(id)}"]
        if "size" in opts.storage_opts:
            quota = parse_size(opts.storage_opts["size"], what=f"zfs size option of layer {id}")
            props += ["-o", f"quota={quota}"]
        dataset = self.dataset(id)
        if parent is None:
            self._checked(["zfs", "create", *props, dataset], f"create layer {id}")
            root = self.id_maps.root_pair
            if root != (0, 0):
                try:
                    path = self.get(id, "")
                    try:
                        os.chown(path, *root)
                    finally:
                        self.put(id)
                except BaseException:
                    self._destroy(id, dataset)
                    raise
            return
        with self._locked(exclusive=False):
            self._create_clone(id, parent, props, dataset)
        # zfs-fuse's `zfs clone` mounts the clone despite canmount=noauto; a
        # layer is mounted only between get and put.
        target = str(self.mountpoint(id))
        if is_mounted(target) is not None:
            self._unmount(id, target)

    def _create_clone(self, id: str, parent: str, props: list[str], dataset: str) -> None:
        snapshot = f"{self.dataset(parent)}@{_CLONE_SNAPSHOT_PREFIX}{_component(id)}"
        proc = zfs.run(["zfs", "snapshot", snapshot], check=False)
        if proc.returncode != 0 and b"exists" in proc.stderr:
            # Left by a create that was killed before its clone existed (or whose clone is gone).
            zfs.run(["zfs", "destroy", snapshot], check=False)
        if proc.returncode != 0:
            self._checked(["zfs", "snapshot", snapshot], f"snapshot parent {parent} of layer {id}")
        try:
            self._checked(["zfs", "clone", *props, snapshot, dataset], f"clone parent {parent} into layer {id}")
        except BaseException:
            zfs.run(["zfs", "destroy", snapshot], check=False)
            raise
        # Deferred destruction: the snapshot goes away by itself when its clone is destroyed.
        proc = zfs.run(["zfs", "destroy", "-d", snapshot], check=False)
        if proc.returncode != 0:
            self._destroy(id, dataset)
            zfs.run(["zfs", "destroy", snapshot], check=False)
            raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Mount the dataset of `id` at ``<home>/mnt/<id>`` (``zfs mount``) and return that path."""
        path = self.mountpoint(id)
        target = str(path)
        dataset = self.dataset(id)
        if is_mounted(target) == dataset:
            return target
        path.mkdir(exist_ok=True)
        proc = zfs.run(["zfs", "mount", dataset], check=False)
        if proc.returncode == 0 and is_mounted(target) == dataset:
            return target
        if zfs.missing(proc):
            raise LayerNotFound(f"layer {id} does not exist in driver zfs (dataset {dataset})")
        # Mounted elsewhere, or the home moved since the layer was created: point the dataset here.
        props = zfs.get_properties(dataset, ["mountpoint", "mounted"])
        if props is None:
            raise LayerNotFound(f"layer {id} does not exist in driver zfs (dataset {dataset})")
        if props.get("mountpoint") != target:
            if props.get("mounted") == "yes":
                zfs.run_retrying_busy(["zfs", "unmount", dataset])
            self._checked(["zfs", "set", f"mountpoint={target}", dataset], f"set the mount point of layer {id}")
            proc = zfs.run(["zfs", "mount", dataset], check=False)
        if is_mounted(target) != dataset:
            raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))
        return target

    @hookimpl
    def put(self, id: str) -> None:
        """Unmount the dataset of `id` if it is mounted (``zfs unmount``); harmless otherwise.

        While a process still has files open in it (without a reference) the
        mount stays: the next `get` reuses it and `remove` unmounts it.
        """
        target = str(self.mountpoint(id))
        if is_mounted(target) is None:
            return
        self._unmount(id, target, strict=False)

    @hookimpl
    def remove(self, id: str) -> None:
        """Destroy the dataset of `id` and its snapshots; `LayerInUse` while a child layer is cloned from it."""
        dataset = self.dataset(id)
        target = str(self.mountpoint(id))
        if is_mounted(target) is not None:
            self._unmount(id, target)
        self._destroy(id, dataset)
        try:
            os.rmdir(target)
        except FileNotFoundError:
            pass

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Pool, its health, the parent dataset, its used/available space and compression."""
        facts = [("Pool", self.pool)]
        proc = zfs.run(["zpool", "list", "-H", "-o", "health", self.pool], check=False)
        facts.append(("Health", proc.stdout.decode().strip() if proc.returncode == 0 else zfs.stderr_of(proc)))
        facts.append(("Parent Dataset", self.fsname))
        props = zfs.get_properties(self.fsname, ["used", "available", "compression"]) or {}
        facts += [
            ("Space Used By Parent", props.get("used", "?")),
            ("Space Available", props.get("available", "?")),
            ("Compression", props.get("compression", "?")),
            ("Home", str(self.home)),
        ]
        return facts

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """The dataset of `id`, its mount point, origin snapshot, quota and whether it is mounted."""
        dataset = self.dataset(id)
        props = zfs.get_properties(dataset, ["origin", "quota", "mounted"])
        if props is None:
            raise LayerNotFound(f"layer {id} does not exist in driver zfs (dataset {dataset})")
        return {
            "dataset": dataset,
            "mountpoint": str(self.mountpoint(id)),
            "origin": props.get("origin", "-"),
            "quota": props.get("quota", "0"),
            "mounted": props.get("mounted", "no"),
        }

    @hookimpl
    def orphans(self) -> list[str]:
        """Snapshots no clone owns, mount directories without a dataset, ``_gc-*`` datasets."""
        return [description for description, _ in self._find_orphans()]

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Destroy snapshots no clone owns and ``_gc-*`` datasets; remove empty mount directories without a dataset."""
        removed = []
        with self._locked(exclusive=True):
            for description, remove in self._find_orphans():
                try:
                    remove()
                except (OSError, LayerStoreError):
                    continue  # still busy or not empty: listed again by the next check
                removed.append(description)
        return removed

    def _find_orphans(self) -> list[tuple[str, Callable[[], None]]]:
        proc = zfs.run(["zfs", "list", "-H", "-o", "name,origin", "-r", "-t", "filesystem", self.fsname], check=False)
        if proc.returncode != 0:
            return []
        origins = {}
        for line in proc.stdout.decode(errors="surrogateescape").splitlines():
            name, _, origin = line.partition("\t")
            origins[name] = origin
        found: list[tuple[str, Callable[[], None]]] = []
        for name in origins:
            if name.rpartition("/")[2].startswith(_GARBAGE_PREFIX):
                found.append((f"zfs dataset {name} (a removal that stayed busy)", _destroyer(["-r", "-f", name])))
        proc = zfs.run(["zfs", "list", "-H", "-o", "name", "-r", "-t", "snapshot", self.fsname], check=False)
        for snapshot in proc.stdout.decode(errors="surrogateescape").splitlines() if proc.returncode == 0 else []:
            dataset, _, name = snapshot.partition("@")
            if dataset.rpartition("/")[0] != self.fsname or not name.startswith(_CLONE_SNAPSHOT_PREFIX):
                continue  # not a layer's dataset, or a snapshot its user took inside a layer
            if origins.get(f"{self.fsname}/{name.removeprefix(_CLONE_SNAPSHOT_PREFIX)}") != snapshot:
                found.append((f"zfs snapshot {snapshot} (no layer is cloned from it)", _destroyer([snapshot])))
        layers = {name.rpartition("/")[2] for name in origins}
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(self.mnt)):
                path = self.mnt / entry
                if entry not in layers and is_mounted(str(path)) is None:
                    found.append((f"zfs mount directory {path} (its dataset is gone)", _rmdir(path)))
        return found

    def _locked(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return held_lock(self._lock, shared=not exclusive)

    @hookimpl
    def cleanup(self) -> None:
        """Destroy datasets left by removals that failed half-way (renamed ``_gc-*``); mounts are the facade's."""
        self._destroy_garbage()

    def _destroy_garbage(self) -> list[str]:
        proc = zfs.run(["zfs", "list", "-H", "-o", "name", "-d", "1", "-t", "filesystem", self.fsname], check=False)
        destroyed = []
        for name in proc.stdout.decode(errors="surrogateescape").splitlines():
            if name.rpartition("/")[2].startswith(_GARBAGE_PREFIX):
                zfs.run_retrying_busy(["zfs", "destroy", "-r", "-f", name])
                destroyed.append(name)
        return destroyed

    # -- helpers -----------------------------------------------------------

    def _checked(self, argv: list[str], doing: str) -> None:
        proc = zfs.run(argv, check=False)
        if proc.returncode == 0:
            return
        err = proc.stderr.lower()
        if b"quota" in err or b"out of space" in err or b"no space" in err:
            raise StorageFull(f"zfs: cannot {doing}: {zfs.stderr_of(proc)}")
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    def _unmount(self, id: str, target: str, *, strict: bool = True) -> None:
        # An unmount that is busy is mostly really held (open files): retry briefly only.
        proc = zfs.run_retrying_busy(["zfs", "unmount", self.dataset(id)], attempts=6)
        if proc.returncode == 0 or is_mounted(target) is None:
            return
        if zfs.is_busy(proc):
            if not strict:
                # No lazy unmount: zfs-fuse's `zfs unmount -f` detaches the
                # mount, and a detached mount still held open can leave the
                # dataset busy for good.  The mount stays; the next `get`
                # reuses it and `remove` unmounts it.
                return
            held = "; ".join(holders(target)) or "no process found with files open there"
            raise LayerInUse(f"layer {id} cannot be unmounted from {target}, it is busy: {held}")
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    def _clones_of(self, dataset: str) -> list[str]:
        proc = zfs.run(["zfs", "list", "-H", "-o", "name,origin", "-d", "1", "-t", "filesystem", self.fsname])
        prefix = f"{dataset}@"
        return [
            name
            for name, _, origin in (line.partition("\t") for line in proc.stdout.decode().splitlines())
            if origin.startswith(prefix)
        ]

    def _destroy(self, id: str, dataset: str) -> None:
        # -r takes the layer's own snapshots with it (ones made inside the
        # layer, and deferred origins of clones already gone); ZFS checks for
        # dependent clones before destroying anything.
        proc = zfs.run_retrying_busy(["zfs", "destroy", "-r", dataset])
        if proc.returncode == 0 or zfs.missing(proc):
            return
        clones = self._clones_of(dataset)
        if clones:
            children = ", ".join(name.rpartition("/")[2] for name in clones)
            raise LayerInUse(f"layer {id} has child layers built on it ({children}); remove them first")
        if zfs.is_busy(proc):
            self._set_aside(id, dataset)
            return
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    def _set_aside(self, id: str, dataset: str) -> None:
        """Rename a dataset that stays busy out of the layer namespace, so `exists` is False; cleanup destroys it."""
        garbage = f"{self.fsname}/{_GARBAGE_PREFIX}{_component(id)}-{time.time_ns()}"
        proc = zfs.run(["zfs", "rename", dataset, garbage], check=False)
        if proc.returncode == 0:
            return
        held = "; ".join(holders(str(self.mountpoint(id)))) or "no process found with files open there"
        raise LayerStoreError(
            f"zfs: cannot remove layer {id}: dataset {dataset} stays busy ({held}) "
            f"and cannot be renamed aside: {zfs.stderr_of(proc)}"
        )


def _destroyer(args: list[str]) -> Callable[[], None]:
    def destroy() -> None:
        proc = zfs.run_retrying_busy(["zfs", "destroy", *args])
        if proc.returncode != 0 and not zfs.missing(proc):
            raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))

    return destroy


def _rmdir(path: Path) -> Callable[[], None]:
    return lambda: os.rmdir(path)
