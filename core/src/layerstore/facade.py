"""The `Driver` facade: the one caller of a driver's hooks, adding what every driver needs.

Each opened driver gets its own pluggy ``PluginManager`` holding that one
driver plugin, the generic fallbacks of `layerstore.naivediff` (``trylast``)
and any wrappers registered later.  The facade checks the required hooks at
load time, counts `get`/`put` references across processes (each reference
owned by the process that took it and reaped when that process dies, see
`layerstore.references`), serialises conflicting operations on one layer
across threads and processes (``flock``), and keeps the lineage and the
marks of applies in progress (`layerstore.layerstate`): a layer with
children cannot be removed (`LayerInUse`), and an ``apply_diff`` cut short
by a crash is reported as a missing layer and collected by `Driver.gc`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import pluggy

from . import hookspecs
from .capabilities import Capabilities, CreateOpts
from .errors import InvalidDriver, LayerExists, LayerInUse, LayerNotFound, LayerStoreError
from .idtools import IDMappings
from .kit.ids import check_layer_id
from .layerstate import LayerState
from .naivediff import NaiveDiff
from .references import ReferenceTable

if TYPE_CHECKING:
    from .change import Change
    from .hookrelay import HookRelay

__all__ = ["TRACE_ENV", "Driver"]

TRACE_ENV = "LAYERSTORE_TRACE_HOOKS"


def _trace_hooks(pm: pluggy.PluginManager, driver_name: str) -> None:
    def before(hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        print(f"layerstore: {driver_name}.{hook_name}({dict(kwargs)})", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        result = f"raised {exc!r}" if exc is not None else f"-> {outcome.get_result()!r}"
        print(f"layerstore: {driver_name}.{hook_name} {result}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def _plugin_manager(name: str, plugin: object) -> pluggy.PluginManager:
    """A plugin manager holding `plugin` alone; `InvalidDriver` when it misses required hooks or has unknown ones."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs.DriverSpec)
    try:
        pm.register(plugin, name=f"driver:{name}")
    except pluggy.PluginValidationError as exc:
        raise InvalidDriver(f"driver {name!r} has an invalid hook implementation: {exc}") from exc
    missing = [
        hook
        for hook in hookspecs.REQUIRED_HOOKS
        if not any(impl.plugin is plugin for impl in getattr(pm.hook, hook).get_hookimpls())
    ]
    if missing:
        raise InvalidDriver(f"driver {name!r} does not implement the required hooks: {', '.join(missing)}")
    unknown = [
        hook_name
        for hook_name in dir(pm.hook)
        if not hook_name.startswith("_") and getattr(pm.hook, hook_name).spec is None
    ]
    if unknown:
        raise InvalidDriver(f"driver {name!r} implements unknown hooks: {', '.join(sorted(unknown))}")
    return pm


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
        self.plugin_manager = pm = _plugin_manager(name, plugin)
        # The fallbacks mount through this facade (reference-counted), seen only as `Mounts`.
        pm.register(NaiveDiff(self, id_maps), name="naivediff")
        if os.environ.get(TRACE_ENV):
            _trace_hooks(pm, name)
        self.hook: HookRelay = cast("HookRelay", pm.hook)
        """The typed hook relay of this driver's plugin manager (for wrappers and the generic fallbacks)."""
        self._refs = ReferenceTable(home, runroot)
        self._state = LayerState(home, self.hook, self._refs)
        self._held: dict[str, list[str]] = {}  # this object's references: layer -> reference names
        self._held_lock = threading.Lock()
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
        with self._held_lock:
            self._held.pop(id, None)

    def get(self, id: str, mount_label: str = "") -> str:
        """Mount layer `id` (a reference owned by this process) and return the path of its full filesystem."""
        with self._refs.locked(id):
            self._require(id)
            self._refs.reap(id)
            first = self._refs.count(id) == 0
            path = self.hook.get(id=id, mount_label=mount_label)
            if path is None:
                raise InvalidDriver(f"driver {self.name!r} returned no path from get({id})")
            try:
                name = self._refs.add(id)
            except BaseException:
                if first:
                    self.hook.put(id=id)
                raise
        with self._held_lock:
            self._held.setdefault(id, []).append(name)
        return str(path)

    def put(self, id: str) -> None:
        """Release one reference to layer `id`; the last one unmounts it.  Harmless when not held.

        The reference released is one this object took, else one detached by
        `detach` (``layerstore mount``); references of other live processes
        are never released.
        """
        with self._held_lock:
            names = self._held.get(id)
            name = names.pop() if names else None
            if names is not None and not names:
                del self._held[id]
        with self._refs.locked(id):
            self._refs.drop(id, name)
            self._refs.reap(id)
            if self._refs.count(id) == 0 and self.hook.exists(id=id):
                self.hook.put(id=id)

    def detach(self, id: str) -> None:
        """Let one reference this object took on `id` outlive the process (``layerstore mount``).

        A later `put` from any process (``layerstore umount``) releases it.
        """
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
        """Return how many live references (across processes) hold layer `id` mounted.

        References of dead processes are released on the way; when that
        leaves none, the layer is unmounted.
        """
        with self._refs.locked(id):
            self.release_stale(id)
            return self._refs.count(id)

    def release_stale(self, id: str) -> int:
        """Release the references to `id` of processes that died; unmount it if none is left.  Return how many."""
        with self._refs.locked(id):
            reaped = self._refs.reap(id)
            if reaped and not self._refs.count(id) and self.hook.exists(id=id):
                self.hook.put(id=id)
            return reaped

    def release_all(self, id: str) -> int:
        """Release every reference to `id`, live or not, and unmount it (``umount --force``); return how many."""
        with self._refs.locked(id):
            self._require(id)
            self.hook.put(id=id)
            dropped = self._refs.drop_all(id)
        with self._held_lock:
            self._held.pop(id, None)
        return dropped

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
        return self.hook.diff(id=id, parent=parent)

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract the uncompressed tar `stream` into layer `id`; return the size of its regular files.

        If extraction fails the layer is removed (whatever it held before) and the error re-raised.
        """
        with self._refs.locked(id):
            self._require(id)
            with self._state.applying(id):
                try:
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
        return self.hook.diff_size(id=id, parent=parent)

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """Return the changes of `id` against `parent`, sorted by path."""
        self._require(id)
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
        with self._held_lock:
            held = [(layer_id, len(names)) for layer_id, names in self._held.items()]
        for layer_id, count in held:
            for _ in range(count):
                self.put(layer_id)
        self.hook.cleanup()
        self._refs.prune()

    def orphans(self) -> list[str]:
        """Describe the driver's leftovers that `gc` would remove (its ``orphans`` hook), without removing them."""
        result = self.hook.orphans()
        return list(result or [])

    def _require(self, id: str) -> None:
        if not self.exists(id):
            raise LayerNotFound(f"layer {id} does not exist in driver {self.name}")

