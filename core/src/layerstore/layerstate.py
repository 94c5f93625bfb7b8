"""What the facade knows about a driver's layers beyond the driver: lineage and applies in progress.

The parent index sees every ``create(id, parent)`` made through a facade (a
layer with children cannot be removed), and pending marks bracket every
``apply_diff`` so that one cut short by a crash is reported as a missing
layer and collected.  Both live in ``<home>/.layerstore/``, a directory
reserved for the core that drivers leave alone.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from ._parents import ParentIndex
from ._pending import PendingApplies
from .errors import LayerInUse
from .kit.atomic import sweep_atomic_temporaries

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from .hookrelay import HookRelay
    from .references import ReferenceTable

__all__ = ["CORE_DIR", "LayerState"]

CORE_DIR = ".layerstore"


class LayerState:
    """Lineage and pending applies of the layers of one driver home; every method takes the layer's lock itself
    or says that its caller holds it."""

    def __init__(self, home: Path, hook: HookRelay, refs: ReferenceTable) -> None:
        self._hook = hook
        self._refs = refs
        self.parents = ParentIndex(home / CORE_DIR)
        self._pending = PendingApplies(home / CORE_DIR)
        self._applying: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def is_half_applied(self, id: str) -> bool:
        """True when `id` has a pending mark that no live apply_diff holds (its process was killed)."""
        if not self._pending.is_marked(id):
            return False
        with self._lock:
            if id in self._applying:
                return False
        with self._refs.try_locked(id) as got:
            return got and self._pending.is_marked(id)

    def clear_interrupted(self, id: str) -> bool:
        """Remove what a killed apply_diff left of `id` (call with its lock held); True if there was any."""
        if not self._pending.is_marked(id) or id in self._applying:
            return False
        if self._hook.exists(id=id):
            self._refs.reap(id)
            if self._refs.count(id):
                self._hook.put(id=id)
            self._hook.remove(id=id)
            self._refs.drop_all(id)
        self.parents.forget(id)
        self._pending.clear(id)
        return True

    def applying(self, id: str) -> _Applying:
        """``with state.applying(id):`` brackets one apply_diff of `id` (call with its lock held)."""
        return _Applying(self, id)

    def live_children(self, id: str) -> list[str]:
        """The layers created on `id` that exist or are being made right now; drops stale records."""
        live = []
        for child in self.parents.children(id):
            if child in self._applying:
                live.append(child)
                continue
            with self._refs.try_locked(child) as got:
                if not got:
                    live.append(child)  # being created or changed by another process right now
                    continue
                self.clear_interrupted(child)
                if self._hook.exists(id=child):
                    live.append(child)
                else:
                    self.parents.drop_mark(id, child)  # left by a killed create
        return live

    def refuse_parent_of_children(self, id: str) -> None:
        """`LayerInUse` naming the children when layers are built on `id`."""
        children = self.live_children(id)
        if children:
            shown = ", ".join(children[:3]) + (", ..." if len(children) > 3 else "")
            raise LayerInUse(
                f"layer {id} is the parent of {len(children)} layer{'s' if len(children) != 1 else ''} "
                f"({shown}); remove {'them' if len(children) != 1 else 'it'} first"
            )

    def recorded(self) -> Iterator[str]:
        """Every layer ID the parent index records (some may be gone: check them)."""
        for layer_id, _ in self.parents.records():
            yield layer_id

    def collect(self) -> list[str]:
        """Remove layers cut short by a crash and stale records; describe what was removed."""
        removed = []
        for layer_id in self._pending.marked():
            with self._refs.try_locked(layer_id) as got:
                if got and layer_id not in self._applying and self.clear_interrupted(layer_id):
                    removed.append(f"layer {layer_id} (apply_diff cut short)")
        for layer_id, parent in self.parents.records():
            with self._refs.try_locked(layer_id) as got:
                if got and not self._hook.exists(id=layer_id):
                    # Left by a killed create or remove: the layer is not there.
                    self.parents.forget(layer_id)
                    if parent is not None:
                        self.parents.drop_mark(parent, layer_id)
        for directory in (self._pending.directory, *self.parents.directories()):
            sweep_atomic_temporaries(directory)
        return removed


class _Applying:
    """Marks an apply_diff in progress on disk (for other processes) and in memory (for other threads)."""

    def __init__(self, state: LayerState, id: str) -> None:
        self._state = state
        self._id = id

    def __enter__(self) -> None:
        state = self._state
        state._pending.mark(self._id)
        with state._lock:
            state._applying[self._id] += 1

    def __exit__(self, *exc: object) -> None:
        state = self._state
        with state._lock:
            state._applying[self._id] -= 1
            if not state._applying[self._id]:
                del state._applying[self._id]
        state._pending.clear(self._id)
