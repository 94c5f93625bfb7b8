"""What the zfs driver names its objects, and which of them belong to no layer (orphans).

Layer ``ID`` is the dataset ``<fsname>/<component>`` mounted at
``<home>/mnt/<component>``, where the component is the ID itself, or
``_<sha256 prefix>`` for IDs that are not valid dataset name components.
A child's clone comes from the snapshot ``<parent dataset>@layerstore-clone-<child component>``;
a removal that stays busy renames its dataset to ``<fsname>/_gc-<component>-<ns>``.

So every object is attributable: a clone snapshot belongs to the clone
``<fsname>/<child component>`` whose origin it is (snapshots with other
names are the layer user's own), a mount directory to the dataset of its
name, a ``_gc-*`` dataset to nobody.  Anything else (a snapshot left by a
create killed before or after its clone, a mount directory whose dataset a
killed ``destroy`` took) is an orphan that `find_orphans` reports with the
way to remove it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ._commands import ZfsCommands, failure, missing
from ._mounts import is_mounted

__all__ = ["CLONE_SNAPSHOT_PREFIX", "GARBAGE_PREFIX", "Naming", "component", "find_orphans"]

GARBAGE_PREFIX = "_gc-"
CLONE_SNAPSHOT_PREFIX = "layerstore-clone-"
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")

Orphan = tuple[str, Callable[[], None]]


def component(layer_id: str) -> str:
    """The dataset name component of a layer ID (``_`` + hash for IDs ZFS would refuse)."""
    if _PLAIN_ID.fullmatch(layer_id):
        return layer_id
    return "_" + hashlib.sha256(layer_id.encode("utf-8", "surrogateescape")).hexdigest()[:48]


class Naming:
    """The names of one store's objects: parent dataset `fsname`, mount directories below `mnt`."""

    def __init__(self, fsname: str, mnt: Path) -> None:
        self.fsname = fsname
        self.mnt = mnt

    def dataset(self, layer_id: str) -> str:
        """The dataset name of layer `layer_id`."""
        return f"{self.fsname}/{component(layer_id)}"

    def mountpoint(self, layer_id: str) -> Path:
        """Where layer `layer_id` is mounted."""
        return self.mnt / component(layer_id)

    def clone_snapshot(self, parent: str, child: str) -> str:
        """The snapshot of `parent` that layer `child` is cloned from."""
        return f"{self.dataset(parent)}@{CLONE_SNAPSHOT_PREFIX}{component(child)}"

    def set_aside(self, layer_id: str) -> str:
        """A fresh name, outside the layer namespace, for a dataset of `layer_id` that stays busy."""
        return f"{self.fsname}/{GARBAGE_PREFIX}{component(layer_id)}-{time.time_ns()}"

    def is_set_aside(self, dataset: str) -> bool:
        """True for a dataset that a removal renamed aside (``_gc-*``)."""
        return dataset.rpartition("/")[2].startswith(GARBAGE_PREFIX)


def find_orphans(zfs: ZfsCommands, naming: Naming) -> list[Orphan]:
    """Every object of the store that no layer owns, as (description, function that removes it)."""
    proc = zfs.run(["zfs", "list", "-H", "-o", "name,origin", "-r", "-t", "filesystem", naming.fsname])
    if proc.returncode != 0:
        return []
    origins = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        name, _, origin = line.partition("\t")
        origins[name] = origin
    found: list[Orphan] = []
    for name in origins:
        if naming.is_set_aside(name):
            found.append((f"zfs dataset {name} (a removal that stayed busy)", _destroyer(zfs, ["-r", "-f", name])))
    proc = zfs.run(["zfs", "list", "-H", "-o", "name", "-r", "-t", "snapshot", naming.fsname])
    for snapshot in proc.stdout.decode(errors="surrogateescape").splitlines() if proc.returncode == 0 else []:
        dataset, _, name = snapshot.partition("@")
        if dataset.rpartition("/")[0] != naming.fsname or not name.startswith(CLONE_SNAPSHOT_PREFIX):
            continue  # not a layer's dataset, or a snapshot its user took inside a layer
        if origins.get(f"{naming.fsname}/{name.removeprefix(CLONE_SNAPSHOT_PREFIX)}") != snapshot:
            found.append((f"zfs snapshot {snapshot} (no layer is cloned from it)", _destroyer(zfs, [snapshot])))
    layers = {name.rpartition("/")[2] for name in origins}
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(naming.mnt)):
            path = naming.mnt / entry
            if entry not in layers and is_mounted(str(path)) is None:
                found.append((f"zfs mount directory {path} (its dataset is gone)", _rmdir(path)))
    return found


def _destroyer(zfs: ZfsCommands, args: list[str]) -> Callable[[], None]:
    def destroy() -> None:
        proc = zfs.run_retrying_busy(["zfs", "destroy", *args])
        if proc.returncode != 0 and not missing(proc):
            raise failure(proc)

    return destroy


def _rmdir(path: Path) -> Callable[[], None]:
    return lambda: os.rmdir(path)
