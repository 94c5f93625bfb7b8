"""Reference-counted `get`/`put` of one driver's layers, across threads and processes.

A driver's own ``get``/``put`` hooks are bare: ``get`` mounts (idempotently)
and ``put`` tears the mount down, whoever else uses it.  `MountCounter`
turns them into counted references (`layerstore.references`): each `get`
adds a reference owned by this process, and only the release of the last
live reference calls the driver's ``put``, so two processes or threads
mounting one layer never unmount each other.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .errors import InvalidDriver, LayerStoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .hookrelay import HookRelay
    from .references import ReferenceTable

__all__ = ["MountCounter"]


class MountCounter:
    """The counted get/put of one opened driver, and the references this object holds.

    `require` raises `LayerNotFound` for a layer that does not exist (the
    facade's rule, which also hides layers cut short by a crash).
    """

    def __init__(self, driver_name: str, hook: HookRelay, refs: ReferenceTable, require: Callable[[str], None]) -> None:
        self._name = driver_name
        self._hook = hook
        self._refs = refs
        self._require = require
        self._held: dict[str, list[str]] = {}  # this object's references: layer -> reference names
        self._held_lock = threading.Lock()

    def get(self, id: str, mount_label: str) -> str:
        """Mount layer `id` (a reference owned by this process) and return the path of its full filesystem."""
        with self._refs.locked(id):
            self._require(id)
            self._refs.reap(id)
            first = self._refs.count(id) == 0
            path = self._hook.get(id=id, mount_label=mount_label)
            if path is None:
                raise InvalidDriver(f"driver {self._name!r} returned no path from get({id})")
            try:
                name = self._refs.add(id)
            except BaseException:
                if first:
                    self._hook.put(id=id)
                raise
        self._hold(id, name)
        return str(path)

    def diff_files(self, id: str) -> str | None:
        """The driver's directory of `id`'s own files (its ``diff_files`` hook), held by one reference as `get` is.

        None, and no reference, when the driver has no such directory.
        """
        with self._refs.locked(id):
            self._require(id)
            path = self._hook.diff_files(id=id)
            if path is None:
                return None
            name = self._refs.add(id)
        self._hold(id, name)
        return str(path)

    def _hold(self, id: str, name: str) -> None:
        """Remember reference `name` on `id` as this object's (for `put` and `release_held`)."""
        with self._held_lock:
            self._held.setdefault(id, []).append(name)

    def put(self, id: str) -> None:
        """Release one reference to `id` (one this object took, else a detached one); the last one unmounts."""
        with self._held_lock:
            names = self._held.get(id)
            name = names.pop() if names else None
            if names is not None and not names:
                del self._held[id]
        with self._refs.locked(id):
            self._refs.drop(id, name)
            self._refs.reap(id)
            if self._refs.count(id) == 0 and self._hook.exists(id=id):
                self._hook.put(id=id)

    def detach(self, id: str) -> None:
        """Let one reference this object took on `id` outlive the process; a later `put` anywhere releases it."""
        with self._held_lock:
            names = self._held.get(id)
            if not names:
                raise LayerStoreError(f"layer {id} is not mounted through this driver object; get it first")
            name = names.pop()
            if not names:
                del self._held[id]
        with self._refs.locked(id):
            self._refs.detach(id, name)

    def references(self, id: str) -> int:
        """How many live references (across processes) hold `id`; stale ones are released on the way."""
        with self._refs.locked(id):
            self.release_stale(id)
            return self._refs.count(id)

    def release_stale(self, id: str) -> int:
        """Release the references to `id` of processes that died; unmount it if none is left.  Return how many."""
        with self._refs.locked(id):
            reaped = self._refs.reap(id)
            if reaped and not self._refs.count(id) and self._hook.exists(id=id):
                self._hook.put(id=id)
            return reaped

    def release_all(self, id: str) -> int:
        """Release every reference to `id`, live or not, and unmount it; return how many there were."""
        with self._refs.locked(id):
            self._require(id)
            self._hook.put(id=id)
            dropped = self._refs.drop_all(id)
        self.forget(id)
        return dropped

    def forget(self, id: str) -> None:
        """Drop this object's record of its references to `id` (their files are gone: the layer was removed)."""
        with self._held_lock:
            self._held.pop(id, None)

    def release_held(self) -> None:
        """Release every reference this object holds (the store is closing)."""
        with self._held_lock:
            held = [(layer_id, len(names)) for layer_id, names in self._held.items()]
        for layer_id, count in held:
            for _ in range(count):
                self.put(layer_id)
