"""`Mounts`: the narrow get/put protocol that code reading a layer's files needs from a driver.

Both the bare driver plugin (through its hooks) and the `layerstore.Driver`
facade satisfy it, so the generic diff fallbacks and the export stream depend
on this protocol only, never on the facade's module.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Mounts"]


class Mounts(Protocol):
    """Make a layer's full filesystem visible (`get`) and release it again (`put`)."""

    def get(self, id: str, mount_label: str = "") -> str:
        """Mount layer `id` and return the path of its root directory (one reference)."""
        ...

    def put(self, id: str) -> None:
        """Release one reference taken by `get`."""
        ...
