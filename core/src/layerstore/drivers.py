"""Driver discovery (entry points), loading, and the `Driver` facade.

Drivers are found in the entry-point group ``layerstore.drivers``.  Each
opened driver gets its own pluggy ``PluginManager`` holding that one driver
plugin, the generic fallbacks of `layerstore.naivediff` (``trylast``) and any
wrappers registered later; the `Driver` facade is the only caller of hooks.

The facade adds what every driver needs and no driver should write again:
checks of the required hooks at load time, reference counting of `get` and
`put` across processes (each reference owned by the process that took it and
reaped when that process dies, see `layerstore.references`), serialisation of conflicting
operations on one layer across threads and processes (``flock``), the parent
index (it sees every ``create(id, parent)``; a layer with children cannot be
removed: `LayerInUse`), and marks of ``apply_diff`` calls in progress, so
that one cut short by a crash is reported as a missing layer and collected
by `Driver.gc`.  The parent index and the marks live in ``<home>/.layerstore/``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pluggy

from . import hookspecs
from ._parents import ParentIndex
from ._pending import PendingApplies
from .capabilities import Capabilities, CreateOpts
from .errors import (
    DriverNotFound,
    DriverNotSupported,
    InvalidDriver,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerStoreError,
)
from .idtools import IDMappings
from .kit.atomic import sweep_atomic_temporaries
from .kit.ids import check_layer_id
from .references import ReferenceTable

if TYPE_CHECKING:
    from .change import Change

__all__ = [
    "ENTRY_POINT_GROUP",
    "Driver",
    "DriverFactory",
    "available_drivers",
    "load_driver",
    "open_driver",
]

ENTRY_POINT_GROUP = "layerstore.drivers"
TRACE_ENV = "LAYERSTORE_TRACE_HOOKS"
_CORE_DIR = ".layerstore"  # under a driver home: reserved for the core; drivers leave it alone
_LOCK_STRIPES = 64

DriverFactory = Callable[[Path, Mapping[str, str], IDMappings], object]


def _distribution_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "?"


def _driver_entry_points() -> dict[str, Any]:
    """Entry points by driver name; `InvalidDriver` naming both distributions when two register one name."""
    import importlib_metadata

    found: dict[str, Any] = {}
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        earlier = found.get(ep.name)
        if earlier is None:
            found[ep.name] = ep
            continue
        first, second = _distribution_name(earlier), _distribution_name(ep)
        if first != second or earlier.value != ep.value:
            raise InvalidDriver(
                f"driver name {ep.name!r} is registered by two distributions, {first} ({earlier.value}) and "
                f"{second} ({ep.value}); uninstall one of them"
            )
    return found


def available_drivers() -> dict[str, str]:
    """Return the installed drivers as ``{name: distribution name}``, sorted by name."""
    return {name: _distribution_name(ep) for name, ep in sorted(_driver_entry_points().items())}


def _no_such_driver(name: str) -> DriverNotFound:
    installed = sorted(_driver_entry_points())
    if not installed:
        return DriverNotFound(
            f"no storage driver named {name!r}: no driver is installed; "
            "install one, e.g. `pip install layerstore-vfs`"
        )
    return DriverNotFound(f"no storage driver named {name!r}; installed drivers: {', '.join(installed)}")


def load_driver(
    name: str,
    home: str | os.PathLike[str],
    options: Mapping[str, str] | None = None,
    id_maps: IDMappings | None = None,
    *,
    runroot: str | os.PathLike[str] | None = None,
) -> Driver:
    """Open the installed driver `name` on `home` and return its facade.

    Mount references are kept under `runroot` (default: see
    `layerstore.references.default_runroot`).  Raises `DriverNotFound` (listing the installed drivers) for an unknown
    name, `DriverNotSupported` with the reason when the driver cannot run
    here, `InvalidDriver` when the driver does not implement the contract.
    """
    ep = _driver_entry_points().get(name)
    if ep is None:
        raise _no_such_driver(name)
    try:
        factory = ep.load()
    except Exception as exc:  # a broken distribution must not crash selection with a traceback
        raise InvalidDriver(f"driver {name!r} failed to import ({ep.value}): {exc}") from exc
    return open_driver(name, factory, home, options, id_maps, runroot=runroot)


def open_driver(
    name: str,
    factory: DriverFactory,
    home: str | os.PathLike[str],
    options: Mapping[str, str] | None = None,
    id_maps: IDMappings | None = None,
    *,
    runroot: str | os.PathLike[str] | None = None,
) -> Driver:
    """Open a driver from its factory directly (for tests and drivers not installed as distributions)."""
    home_path = Path(home)
    opts = dict(options or {})
    maps = id_maps if id_maps is not None else IDMappings()
    declared = getattr(factory, "hook_api_version", hookspecs.HOOK_API_VERSION)
    if declared != hookspecs.HOOK_API_VERSION:
        raise InvalidDriver(
            f"driver {name!r} is written for hook API version {declared!r}, but this layerstore provides "
            f"version {hookspecs.HOOK_API_VERSION}; install a release of the driver made for this layerstore"
        )
    try:
        plugin = factory(home_path, opts, maps)
    except LayerStoreError:
        raise
    except (OSError, ValueError) as exc:
        raise DriverNotSupported(f"driver {name!r} cannot start on {home_path}: {exc}") from exc
    return Driver(name, plugin, home_path, maps, runroot=Path(runroot) if runroot is not None else None)


def _trace_hooks(pm: pluggy.PluginManager, driver_name: str) -> None:
    def before(hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        print(f"layerstore: {driver_name}.{hook_name}({dict(kwargs)})", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        result = f"raised {exc!r}" if exc is not None else f"-> {outcome.get_result()!r}"
        print(f"layerstore: {driver_name}.{hook_name} {result}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


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
        self.plugin_manager = pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
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

        from .naivediff import NaiveDiff

        pm.register(NaiveDiff(self), name="naivediff")
        if os.environ.get(TRACE_ENV):
            _trace_hooks(pm, name)
        self._refs = ReferenceTable(home, runroot)
        self._parents = ParentIndex(home / _CORE_DIR)
        self._pending = PendingApplies(home / _CORE_DIR)
        self._applying: collections.Counter[str] = collections.Counter()
        self._held: dict[str, list[str]] = {}  # this object's references: layer -> reference names
        self._held_lock = threading.Lock()
        caps = pm.hook.capabilities()
        self.capabilities: Capabilities = caps if caps is not None else Capabilities()
        self.max_depth: int | None = self.capabilities.max_depth

    def __repr__(self) -> str:
        return f"<Driver {self.name} at {self.home}>"

    @property
    def hook(self) -> Any:
        """The hook relay of this driver's plugin manager (for wrappers and the generic fallbacks)."""
        return self.plugin_manager.hook

    def create(self, id: str, parent: str | None = None, opts: CreateOpts | None = None) -> None:
        """Create layer `id` as a copy of `parent` (empty when None).  See `DriverSpec.create`."""
        check_layer_id(self.name, id)
        with self._refs.locked(id):
            self._clear_interrupted(id)
            if self.hook.exists(id=id):
                raise LayerExists(f"layer {id} already exists in driver {self.name}")
            if parent is not None and not self.exists(parent):
                raise LayerNotFound(f"parent layer {parent} of {id} does not exist in driver {self.name}")
            # The child mark comes first: a concurrent remove of the parent sees it.
            self._parents.forget(id)  # records a killed create or remove of this ID may have left
            self._parents.record(id, parent)
            try:
                self.hook.create(id=id, parent=parent, opts=opts if opts is not None else CreateOpts())
            except BaseException:
                if not self.hook.exists(id=id):
                    self._parents.forget(id)
                raise

    def remove(self, id: str, *, force: bool = False) -> None:
        """Remove layer `id`; `LayerInUse` while it is mounted unless `force` (which unmounts it first).

        References of processes that died are released first.  When removal
        fails (a busy mount, say), the layer, its files and its references
        are left as they were.
        """
        with self._refs.locked(id):
            self._require(id)
            self._refuse_parent_of_children(id)
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
            self._parents.forget(id)
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
        if self._pending.is_marked(id) and self._interrupted(id):
            return False
        return bool(self.hook.exists(id=id))

    def parent(self, id: str) -> str | None:
        """The layer `id` was created on through this facade (None for a base layer)."""
        self._require(id)
        return self._parents.parent(id)

    def children(self, id: str) -> list[str]:
        """The existing layers created on `id` (stale records of killed processes are dropped)."""
        self._require(id)
        with self._refs.locked(id):
            return self._live_children(id)

    def gc(self, live_ids: Iterable[str] = ()) -> list[str]:
        """Collect leftovers: layers cut short by a crash, stale records, then the driver's own (its ``gc`` hook).

        `live_ids` are the layers the caller (the image store) still knows;
        the driver may use them to find orphans of its own.  Returns human
        descriptions of what was removed.
        """
        removed = []
        for layer_id in self._pending.marked():
            with self._refs.try_locked(layer_id) as got:
                if got and layer_id not in self._applying and self._clear_interrupted(layer_id):
                    removed.append(f"layer {layer_id} (apply_diff cut short)")
        for layer_id, parent in self._parents.records():
            with self._refs.try_locked(layer_id) as got:
                if got and not self.hook.exists(id=layer_id):
                    # Left by a killed create or remove: the layer is not there.
                    self._parents.forget(layer_id)
                    if parent is not None:
                        self._parents.drop_mark(parent, layer_id)
        for directory in (self._pending.directory, *self._parents.directories()):
            sweep_atomic_temporaries(directory)
        result = self.hook.gc(live_ids=sorted(set(live_ids)))
        removed += list(result or [])
        return removed

    def diff(self, id: str, parent: str | None = None) -> BinaryIO:
        """Return a stream of the uncompressed tar of `id`'s changes against `parent` (caller closes it)."""
        self._require(id)
        result: BinaryIO = self.hook.diff(id=id, parent=parent)
        return result

    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract the uncompressed tar `stream` into layer `id`; return the size of its regular files.

        If extraction fails the layer is removed (whatever it held before) and the error re-raised.
        """
        with self._refs.locked(id):
            self._require(id)
            self._pending.mark(id)
            with self._held_lock:
                self._applying[id] += 1
            try:
                size: int = self.hook.apply_diff(id=id, parent=parent, stream=stream)
            except BaseException:
                # The contract allows "as before, or removed"; removing is the
                # one answer that holds for every driver and every failure.
                with contextlib.suppress(LayerStoreError, OSError):
                    self.remove(id, force=True)
                raise
            finally:
                with self._held_lock:
                    self._applying[id] -= 1
                    if not self._applying[id]:
                        del self._applying[id]
                self._pending.clear(id)
            return size

    def diff_size(self, id: str, parent: str | None = None) -> int:
        """Return the size of the changes of `id` against `parent`."""
        self._require(id)
        size: int = self.hook.diff_size(id=id, parent=parent)
        return size

    def changes(self, id: str, parent: str | None = None) -> list[Change]:
        """Return the changes of `id` against `parent`, sorted by path."""
        self._require(id)
        result: list[Change] = self.hook.changes(id=id, parent=parent)
        return result

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

    def _interrupted(self, id: str) -> bool:
        """True when `id` has a pending mark that no live apply_diff holds (its process was killed)."""
        with self._held_lock:
            if id in self._applying:
                return False
        with self._refs.try_locked(id) as got:
            return got and self._pending.is_marked(id)

    def _clear_interrupted(self, id: str) -> bool:
        """Remove what a killed apply_diff left of `id` (call with its lock held); True if there was any."""
        if not self._pending.is_marked(id) or id in self._applying:
            return False
        if self.hook.exists(id=id):
            self._refs.reap(id)
            if self._refs.count(id):
                self.hook.put(id=id)
            self.hook.remove(id=id)
            self._refs.drop_all(id)
        self._parents.forget(id)
        self._pending.clear(id)
        return True

    def _live_children(self, id: str) -> list[str]:
        live = []
        for child in self._parents.children(id):
            if child in self._applying:
                live.append(child)
                continue
            with self._refs.try_locked(child) as got:
                if not got:
                    live.append(child)  # being created or changed by another process right now
                    continue
                self._clear_interrupted(child)
                if self.hook.exists(id=child):
                    live.append(child)
                else:
                    self._parents.drop_mark(id, child)  # left by a killed create
        return live

    def _refuse_parent_of_children(self, id: str) -> None:
        children = self._live_children(id)
        if children:
            shown = ", ".join(children[:3]) + (", ..." if len(children) > 3 else "")
            raise LayerInUse(
                f"layer {id} is the parent of {len(children)} layer{'s' if len(children) != 1 else ''} "
                f"({shown}); remove {'them' if len(children) != 1 else 'it'} first"
            )
