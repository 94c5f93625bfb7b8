"""The `Driver` facade: the one caller of a driver's hooks, adding what every driver needs.

Each opened driver gets its own pluggy ``PluginManager`` holding that one
driver plugin (`layerstore.pluginmanager`, which checks the required hooks),
the generic fallbacks of `layerstore.naivediff` (``trylast``) and any
wrappers registered later.  The facade counts `get`/`put` references across
processes (`layerstore.mounting`; each reference owned by the process that
took it and reaped when that process dies, see `layerstore.references`),
holds references around the generic fallbacks (`layerstore.fallbackmounts`),
serialises conflicting operations on one layer across threads and processes
(``flock``), and keeps the lineage and the marks of applies in progress
(`layerstore.layerstate`): a layer with children cannot be removed
(`LayerInUse`), and an ``apply_diff`` cut short by a crash is reported as a
missing layer and collected by `Driver.gc`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .capabilities import Capabilities, CreateOpts
from .errors import LayerExists, LayerInUse, LayerNotFound, LayerStoreError
from .fallbackmounts import FallbackMounts
from .idtools import IDMappings
from .kit.ids import check_layer_id
from .layerstate import LayerState
from .mounting import MountCounter
from .naivediff import NaiveDiff
from .pluginmanager import TRACE_ENV, driver_plugin_manager
from .references import ReferenceTable

if TYPE_CHECKING:
    from .change import Change
    from .hookrelay import HookRelay

__all__ = ["TRACE_ENV", "Driver"]


class Driver:
    """A typed facade over one opened storage driver.

    Methods mirror the hooks of `layerstore.hookspecs.DriverSpec` and add
    reference counting and per-layer serialisation.  Obtain one with
    `load_driver`.
    """

    def __init__(
        self, name: str, plugin: object, home: Path, id_maps: IDMappings, *, runroot: Path | None = None
    ) -> None:
        self.name = name
        self.home = home
        self.id_maps = id_maps
        self.plugin = plugin
        self.plugin_manager = pm = driver_plugin_manager(name, plugin)
        self.hook: HookRelay = cast("HookRelay", pm.hook)
        """The typed hook relay of this driver's plugin manager (for wrappers and the generic fallbacks).

        Call the facade's methods, not the relay's diff hooks: the generic
        fallbacks mount with the driver's bare ``get`` and rely on the
        references the facade holds around them to unmount again.
        """
        self._refs = ReferenceTable(home, runroot)
        self._state = LayerState(home, self.hook, self._refs)
        self._mounts = MountCounter(name, self.hook, self._refs, self._require)
        # The fallbacks mount with the driver's bare get/put; the facade holds references around them.
        self._fallback = FallbackMounts(name, self.hook, self._refs, self._require)
        pm.register(NaiveDiff(self._fallback, id_maps), name="naivediff")
        caps = self.hook.capabilities()
        self.capabilities: Capabilities = caps if caps is not None else Capabilities()
        self.max_depth: int | None = self.capabilities.max_depth

    def __repr__(self) -> str:
        return f"<Driver {self.name} at {self.home}>"

    def create(self, id: str, parent: str | None = None, opts: CreateOpts | None = None) -> None:
        """Create layer `id` as a copy of `parent` (empty when None).  See `DriverSpec.create`."""
        check_layer_id(self.name, id)
        with self._refs.locked(id):
            self._state.clear_interrupted(id)
            if self.hook.exists(id=id):
                raise LayerExists(f"layer {id} already exists in driver {self.name}")
            if parent is not None and not self.exists(parent):
                raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver {self.name}")
            # The child mark comes first: a concurrent remove of the parent sees it.
            parents = self._state.parents
            parents.forget(id)  # records a killed create or remove of this ID may have left
            parents.record(id, parent)
            try:
                self.hook.create(id=id, parent=parent, opts=opts if opts is not None else CreateOpts())
            except BaseException:
                if not self.hook.exists(id=id):
                    parents.forget(id)
                raise

    def remove(self, id: str, *, force: bool = False) -> None:
        """Remove layer `id`; `LayerInUse` while it is mounted unless `force` (which unmounts it first).

        References of processes that died are released first.  When removal
        fails (a busy mount, say), the layer, its files and its references
        are left as they were.
        """
        with self._refs.locked(id):
            self._require(id)
            self._state.refuse_parent_of_children(id)
            self._refs.reap(id)
            count = self._refs.count(id)
            if count and not force:
                raise LayerInUse(
                    f"layer {id} is mounted ({count} reference{'s' if count != 1 else ''}); "
                    "unmount it first, or remove with force"
                )
            if count:
                self.hook.put(id=id)
            self.hook.remove(id=id)
            self._refs.drop_all(id)
            self._state.parents.forget(id)
        self._mounts.forget(id)

    def get(self, id: str, mount_label: str = "") -> str:
        """Mount layer `id` (a reference owned by this process) and return the path of its full filesystem."""
        return self._mounts.get(id, mount_label)

    def diff_files(self, id: str) -> str | None:
        """The directory of layer `id`'s own files, readable without a mount (`DriverSpec.diff_files`), or None.

        A path comes with one reference owned by this process, as from `get`
        (so `remove` refuses meanwhile): release it with `put`.  None, and no
        reference, when the driver has no such directory; mount with `get`
        then.  Files whose path leads through a lower layer are only in the
        mounted filesystem.
        """
        return self._mounts.diff_files(id)

    def put(self, id: str) -> None:
        """Release one reference to layer `id`; the last one unmounts it.  Harmless when not held.

        The reference released is one this object took, else one detached by
        `detach` (``layerstore mount``); references of other live processes
        are never released.
        """
        self._mounts.put(id)

    def detach(self, id: str) -> None:
        """Let one reference this object took on `id` outlive the process (``layerstore mount``).

        A later `put` from any process (``layerstore umount``) releases it.
        """
        self._mounts.detach(id)

    def references(self, id: str) -> int:
        """Return how many live references (across processes) hold layer `id` mounted.

        References of dead processes are released on the way; when that
        leaves none, the layer is unmounted.
        """
        return self._mounts.references(id)

    def release_stale(self, id: str) -> int:
        """Release the references to `id` of processes that died; unmount it if none is left.  Return how many."""
        return self._mounts.release_stale(id)

    def release_all(self, id: str) -> int:
        """Release every reference to `id`, live or not, and unmount it (``umount --force``); return how many."""
        return self._mounts.release_all(id)

    @contextlib.contextmanager
    def mounted(self, id: str, mount_label: str = "") -> Iterator[str]:
        """``with driver.mounted(id) as path:`` -- `get` on entry, `put` on exit."""
        path = self.get(id, mount_label)
        try:
            yield path
        finally:
            self.put(id)

    def exists(self, id: str) -> bool:
        """Return True if layer `id` exists, whole (not cut short by a crash in `apply_diff`)."""
        if self._state.is_half_applied(id):
            return False
        return bool(self.hook.exists(id=id))

    def parent(self, id: str) -> str | None:
        """The layer `id` was created on through this facade (None for a base layer)."""
        self._require(id)
        return self._state.parents.parent(id)

    def children(self, id: str) -> list[str]:
        """The existing layers created on `id` (stale records of killed processes are dropped)."""
        self._require(id)
        with self._refs.locked(id):
            return self._state.live_children(id)

    def layers(self) -> list[str]:
        """The existing layers created through this facade (every process's), sorted.

        Read from the parent index the facade keeps for every ``create``, so
        the store never has to guess layer names from the driver's home.
        """
        return sorted({layer_id for layer_id in self._state.recorded() if self.exists(layer_id)})

    def gc(self, live_ids: Iterable[str] = ()) -> list[str]:
        """Collect leftovers: layers cut short by a crash, stale records, then the driver's own (its ``gc`` hook).

        `live_ids` are the layers the caller (the image store) still knows;
        the driver may use them to find orphans of its own.  Returns human
        descriptions of what was removed.
        """
        removed = self._state.collect()
        result = self.hook.gc(live_ids=sorted(set(live_ids)))
        removed += list(result or [])
        return removed

    def diff(self, id: str, parent: str | None = None) -> BinaryIO:
        """Return a stream of the uncompressed tar of `id`'s changes against `parent` (caller closes it)."""
        self._require(id)
        with self._fallback.holding(id, parent) as hold:
            return hold.keep_open(self.hook.diff(id=id, parent=parent), id)

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract the uncompressed tar `stream` into layer `id`; return the size of its regular files.

        If extraction fails the layer is removed (whatever it held before) and the error re-raised.
        """
        with self._refs.locked(id):
            self._require(id)
            with self._state.applying(id):
                try:
                    with self._fallback.holding(id):
                        return self.hook.apply_diff(id=id, parent=parent, stream=stream)
                except BaseException:
                    # The contract allows "as before, or removed"; removing is the
                    # one answer that holds for every driver and every failure.
                    with contextlib.suppress(LayerStoreError, OSError):
                        self.remove(id, force=True)
                    raise

    def diff_size(self, id: str, parent: str | None = None) -> int:
        """Return the size of the changes of `id` against `parent`."""
        self._require(id)
        with self._fallback.holding(id, parent):
            return self.hook.diff_size(id=id, parent=parent)

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """Return the changes of `id` against `parent`, sorted by path."""
        self._require(id)
        with self._fallback.holding(id, parent):
            return self.hook.changes(id=id, parent=parent)

    def status(self) -> list[tuple[str, str]]:
        """Return human facts about the driver as (key, value) pairs."""
        result = self.hook.status()
        return list(result) if result is not None else []

    def metadata(self, id: str) -> dict[str, str]:
        """Return driver facts about layer `id`."""
        self._require(id)
        result = self.hook.metadata(id=id)
        return dict(result) if result is not None else {}

    def cleanup(self) -> None:
        """Release every reference taken through this object, then let the driver release its resources."""
        self._mounts.release_held()
        self._fallback.release_open()
        self.hook.cleanup()
        self._refs.prune()

    def orphans(self) -> list[str]:
        """Describe the driver's leftovers that `gc` would remove (its ``orphans`` hook), without removing them."""
        result = self.hook.orphans()
        return list(result or [])

    def _require(self, id: str) -> None:
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver {self.name}")
