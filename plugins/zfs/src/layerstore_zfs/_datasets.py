"""Making, unmounting and destroying the datasets of layers, with the wording of their failures.

A child is ``zfs snapshot <parent>@layerstore-clone-<child>`` plus ``zfs
clone`` of that snapshot, which is then marked for deferred destruction
(``zfs destroy -d``) so that it disappears with its clone.  A removal
destroys the dataset with its own snapshots; one that stays busy is renamed
aside (``_gc-*``) so that the layer is gone at once and ``gc`` finishes it.
"""

from __future__ import annotations

from layerstore.errors import LayerInUse, LayerStoreError

from ._commands import ZfsCommands, failure, is_busy, missing, stderr_of
from ._mounts import holders, is_mounted
from ._naming import Naming

__all__ = ["Datasets"]


class Datasets:
    """The dataset operations of one store (`zfs` runs the commands, `naming` names the objects)."""

    def __init__(self, zfs: ZfsCommands, naming: Naming) -> None:
        self.zfs = zfs
        self.naming = naming

    def create_clone(self, id: str, parent: str, props: list[str]) -> None:
        """Make layer `id` a clone of a fresh snapshot of `parent` with properties `props`; leave nothing on failure."""
        zfs = self.zfs
        dataset = self.naming.dataset(id)
        snapshot = self.naming.clone_snapshot(parent, id)
        proc = zfs.run(["zfs", "snapshot", snapshot])
        if proc.returncode != 0 and b"exists" in proc.stderr:
            # Left by a create that was killed before its clone existed (or whose clone is gone).
            zfs.run(["zfs", "destroy", snapshot])
        if proc.returncode != 0:
            zfs.checked(["zfs", "snapshot", snapshot], f"snapshot parent {parent} of layer {id}")
        try:
            zfs.checked(["zfs", "clone", *props, snapshot, dataset], f"clone parent {parent} into layer {id}")
        except BaseException:
            zfs.run(["zfs", "destroy", snapshot])
            raise
        # Deferred destruction: the snapshot goes away by itself when its clone is destroyed.
        proc = zfs.run(["zfs", "destroy", "-d", snapshot])
        if proc.returncode != 0:
            self.destroy(id)
            zfs.run(["zfs", "destroy", snapshot])
            raise failure(proc)

    def unmount(self, id: str, *, strict: bool = True) -> None:
        """Unmount layer `id`; when busy: `LayerInUse` naming the holders if `strict`, else leave the mount."""
        target = str(self.naming.mountpoint(id))
        # An unmount that is busy is mostly really held (open files): retry briefly only.
        proc = self.zfs.run_retrying_busy(["zfs", "unmount", self.naming.dataset(id)], attempts=6)
        if proc.returncode == 0 or is_mounted(target) is None:
            return
        if is_busy(proc):
            if not strict:
                # No lazy unmount: zfs-fuse's `zfs unmount -f` detaches the
                # mount, and a detached mount still held open can leave the
                # dataset busy for good.  The mount stays; the next `get`
                # reuses it and `remove` unmounts it.
                return
            held = "; ".join(holders(target)) or "no process found with files open there"
            raise LayerInUse(f"layer {id} cannot be unmounted from {target}, it is busy: {held}")
        raise failure(proc)

    def destroy(self, id: str) -> None:
        """Destroy the dataset of `id` and its snapshots; `LayerInUse` while a child is cloned from it."""
        dataset = self.naming.dataset(id)
        # -r takes the layer's own snapshots with it (ones made inside the
        # layer, and deferred origins of clones already gone); ZFS checks for
        # dependent clones before destroying anything.
        proc = self.zfs.run_retrying_busy(["zfs", "destroy", "-r", dataset])
        if proc.returncode == 0 or missing(proc):
            return
        clones = self._clones_of(dataset)
        if clones:
            children = ", ".join(name.rpartition("/")[2] for name in clones)
            raise LayerInUse(f"layer {id} has child layers built on it ({children}); remove them first")
        if is_busy(proc):
            self._set_aside(id, dataset)
            return
        raise failure(proc)

    def destroy_set_aside(self) -> list[str]:
        """Destroy the datasets that removals renamed aside; return their names."""
        fsname = self.naming.fsname
        proc = self.zfs.run(["zfs", "list", "-H", "-o", "name", "-d", "1", "-t", "filesystem", fsname])
        destroyed = []
        for name in proc.stdout.decode(errors="surrogateescape").splitlines():
            if self.naming.is_set_aside(name):
                self.zfs.run_retrying_busy(["zfs", "destroy", "-r", "-f", name])
                destroyed.append(name)
        return destroyed

    def _clones_of(self, dataset: str) -> list[str]:
        argv = ["zfs", "list", "-H", "-o", "name,origin", "-d", "1", "-t", "filesystem", self.naming.fsname]
        proc = self.zfs.run(argv, check=True)
        prefix = f"{dataset}@"
        return [
            name
            for name, _, origin in (line.partition("\t") for line in proc.stdout.decode().splitlines())
            if origin.startswith(prefix)
        ]

    def _set_aside(self, id: str, dataset: str) -> None:
        # Out of the layer namespace, so `exists` is False at once; cleanup and gc destroy it.
        proc = self.zfs.run(["zfs", "rename", dataset, self.naming.set_aside(id)])
        if proc.returncode == 0:
            return
        held = "; ".join(holders(str(self.naming.mountpoint(id)))) or "no process found with files open there"
        raise LayerStoreError(
            f"zfs: cannot remove layer {id}: dataset {dataset} stays busy ({held}) "
            f"and cannot be renamed aside: {stderr_of(proc)}"
        )
