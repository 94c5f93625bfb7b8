"""The ZFS storage driver's hooks.

Layout: layer ``ID`` is the dataset ``<fsname>/ID`` (see `layerstore_zfs._naming`
for IDs that are not valid dataset names and for what every object is
attributed to).  A base layer is ``zfs create``; a child is a clone of a
snapshot of its parent (`layerstore_zfs._datasets`).  Datasets carry
``canmount=noauto``, ``atime=off`` and a ``mountpoint`` of ``<home>/mnt/ID``; `get` is
``zfs mount``, `put` is ``zfs unmount`` (legacy mounts need ``mount -t
zfs``, which zfs-fuse does not have).  Diffs come from the core's generic
implementation.

Locks: creates hold ``<home>/lock`` shared from snapshot to clone; ``gc``
holds it exclusively, so it never takes a snapshot a live create needs.
Every ``zfs``/``zpool`` command runs alone within the store and within a
time limit (`layerstore_zfs._commands`).  ``check`` lists the orphans a
killed command left and ``gc`` removes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import hookimpl
from layerstore.capabilities import Capabilities
from layerstore.errors import DriverNotSupported, LayerNotFound, LayerStoreError
from layerstore.kit import check_layer_id, check_options, check_storage_options, held_lock, is_valid_layer_id
from layerstore.sizes import parse_size

from ._commands import ZfsCommands, failure, missing, stderr_of
from ._datasets import Datasets
from ._mounts import ZFS_FSTYPES, is_mounted, mount_of
from ._naming import Naming, find_orphans

if TYPE_CHECKING:
    from layerstore.capabilities import CreateOpts
    from layerstore.idtools import IDMappings

__all__ = ["ZfsDriver"]

OPTIONS = frozenset({"fsname"})
STORAGE_OPTIONS = frozenset({"size"})


class ZfsDriver:
    """Layers as ZFS datasets; children are clones of a snapshot of their parent.

    The factory of the ``zfs`` driver: ``ZfsDriver(home, options, id_maps)``.
    Option ``fsname`` names the parent dataset of the layers; without it the
    dataset that `home` is on is used.  Raises `DriverNotSupported` when the
    zfs tools are missing, the pool is not reachable or no parent dataset is
    known.  Any hook raises `StorageError` when the zfs daemon stops answering.
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options("zfs", options, dict.fromkeys(OPTIONS))
        for program in ("zfs", "zpool"):
            if shutil.which(program) is None:
                raise DriverNotSupported(f"zfs: {program}: command not found (install OpenZFS or zfs-fuse)")
        # The real path: mount points are compared with /proc/self/mountinfo, which shows no symlinks.
        self.home = Path(os.path.realpath(home))
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
        probe = ZfsCommands()  # the home does not exist yet: nothing to lock on
        proc = probe.run(["zpool", "list", "-H", "-o", "name,health", self.pool])
        if proc.returncode != 0:
            raise DriverNotSupported(f"zfs: the pool is not reachable: {stderr_of(proc)}")
        proc = probe.run(["zfs", "list", "-H", "-o", "name", fsname])
        if proc.returncode != 0:
            raise DriverNotSupported(
                f"zfs: the parent dataset {fsname} is not usable: {stderr_of(proc)}; create it or set the fsname option"
            )
        self.mnt = self.home / "mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        # The driver's lock file is part of the home from the start (a fixed name: creating it
        # again is harmless), not something the first locked operation leaves behind.
        self._lock = self.home / "lock"
        os.close(os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self.zfs = ZfsCommands(self.mnt)
        self.naming = Naming(fsname, self.mnt)
        self.datasets = Datasets(self.zfs, self.naming)

    def __repr__(self) -> str:
        return f"<ZfsDriver {self.fsname} at {self.home}>"

    def dataset(self, layer_id: str) -> str:
        """The dataset name of layer `layer_id`."""
        return self.naming.dataset(layer_id)

    def mountpoint(self, layer_id: str) -> Path:
        """Where `get` mounts layer `layer_id`."""
        return self.naming.mountpoint(layer_id)

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
        proc = self.zfs.run(["zfs", "list", "-H", "-o", "name", self.dataset(id)])
        if proc.returncode == 0:
            return True
        if missing(proc):
            return False
        raise failure(proc)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create the dataset of `id`: ``zfs create`` for a base layer, snapshot + clone of `parent` otherwise."""
        check_layer_id("zfs", id)
        check_storage_options("zfs", id, opts.storage_opts, STORAGE_OPTIONS)
        # atime=off: reading a layer never writes. On a full pool, zfs-fuse could otherwise not release
        # the files a read touched, and the unmount of the layer never finished (the daemon hung).
        props = ["-o", "canmount=noauto", "-o", "atime=off", "-o", f"mountpoint={self.mountpoint(id)}"]
        if "size" in opts.storage_opts:
            quota = parse_size(opts.storage_opts["size"], what=f"zfs size option of layer {id}")
            props += ["-o", f"quota={quota}"]
        if parent is None:
            self.zfs.checked(["zfs", "create", *props, self.dataset(id)], f"create layer {id}")
            root = self.id_maps.root_pair
            if root != (0, 0):
                try:
                    path = self.get(id, "")
                    try:
                        os.chown(path, *root)
                    finally:
                        self.put(id)
                except BaseException:
                    self.datasets.destroy(id)
                    raise
            return
        with self._locked(exclusive=False):
            self.datasets.create_clone(id, parent, props)
        # zfs-fuse's `zfs clone` mounts the clone despite canmount=noauto; a
        # layer is mounted only between get and put.
        if is_mounted(str(self.mountpoint(id))) is not None:
            self.datasets.unmount(id)

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Mount the dataset of `id` at ``<home>/mnt/<id>`` (``zfs mount``) and return that path."""
        path = self.mountpoint(id)
        target = str(path)
        dataset = self.dataset(id)
        if is_mounted(target) == dataset:
            return target
        path.mkdir(exist_ok=True)
        proc = self.zfs.run(["zfs", "mount", dataset])
        if proc.returncode == 0 and is_mounted(target) == dataset:
            return target
        if missing(proc):
            raise LayerNotFound(f"layer {id} does not exist in driver zfs (dataset {dataset})")
        # Mounted elsewhere, or the home moved since the layer was created: point the dataset here.
        props = self.zfs.get_properties(dataset, ["mountpoint", "mounted"])
        if props is None:
            raise LayerNotFound(f"layer {id} does not exist in driver zfs (dataset {dataset})")
        if props.get("mountpoint") != target:
            if props.get("mounted") == "yes":
                self.zfs.run_retrying_busy(["zfs", "unmount", dataset])
            self.zfs.checked(["zfs", "set", f"mountpoint={target}", dataset], f"set the mount point of layer {id}")
            proc = self.zfs.run(["zfs", "mount", dataset])
        if is_mounted(target) != dataset:
            raise failure(proc)
        return target

    @hookimpl
    def put(self, id: str) -> None:
        """Unmount the dataset of `id` if it is mounted (``zfs unmount``); harmless otherwise.

        While a process still has files open in it (without a reference) the
        mount stays: the next `get` reuses it and `remove` unmounts it.
        """
        if is_mounted(str(self.mountpoint(id))) is None:
            return
        self.datasets.unmount(id, strict=False)

    @hookimpl
    def remove(self, id: str) -> None:
        """Destroy the dataset of `id` and its snapshots; `LayerInUse` while a child layer is cloned from it."""
        target = str(self.mountpoint(id))
        if is_mounted(target) is not None:
            self.datasets.unmount(id)
        self.datasets.destroy(id)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(target)

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Pool, its health, the parent dataset, its used/available space and compression."""
        facts = [("Pool", self.pool)]
        proc = self.zfs.run(["zpool", "list", "-H", "-o", "health", self.pool])
        facts.append(("Health", proc.stdout.decode().strip() if proc.returncode == 0 else stderr_of(proc)))
        facts.append(("Parent Dataset", self.fsname))
        props = self.zfs.get_properties(self.fsname, ["used", "available", "compression"]) or {}
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
        props = self.zfs.get_properties(dataset, ["origin", "quota", "mounted"])
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
        return [description for description, _ in find_orphans(self.zfs, self.naming)]

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Destroy snapshots no clone owns and ``_gc-*`` datasets; remove empty mount directories without a dataset."""
        removed = []
        with self._locked(exclusive=True):
            for description, remove in find_orphans(self.zfs, self.naming):
                try:
                    remove()
                except (OSError, LayerStoreError):
                    continue  # still busy or not empty: listed again by the next check
                removed.append(description)
        return removed

    @hookimpl
    def cleanup(self) -> None:
        """Destroy datasets left by removals that failed half-way (renamed ``_gc-*``); mounts are the facade's."""
        self.datasets.destroy_set_aside()

    def _locked(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return held_lock(self._lock, shared=not exclusive)
