"""Retain sessions: layers a pull or build in progress holds, so that `Graph.delete` refuses them."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RetainSessions"]


class RetainSessions:
    """Which sessions hold which layers, in this process (thread-safe)."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def retain(self, session_id: str, layer_ids: Iterable[str]) -> None:
        """Hold `layer_ids` for `session_id`."""
        with self._lock:
            for layer_id in layer_ids:
                self._held.setdefault(layer_id, set()).add(session_id)

    def release(self, session_id: str, layer_ids: Iterable[str]) -> None:
        """Drop the holds of `session_id` on `layer_ids` (unknown ones are ignored)."""
        with self._lock:
            for layer_id in layer_ids:
                holders = self._held.get(layer_id)
                if holders is None:
                    continue
                holders.discard(session_id)
                if not holders:
                    del self._held[layer_id]

    def is_held(self, layer_id: str) -> bool:
        """True while some session holds `layer_id`."""
        with self._lock:
            return layer_id in self._held

    def forget(self, layer_id: str) -> None:
        """Drop every hold on `layer_id` (it was deleted)."""
        with self._lock:
            self._held.pop(layer_id, None)
