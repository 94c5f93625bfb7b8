"""The two narrow get/put protocols that code reading a layer's files needs from a driver.

`Mounts` is the counted get/put of the `layerstore.Driver` facade (one
reference per `get` or `diff_files`): the export stream
(`layerstore.tarsplit.layerstream`) reads layers through it.  `PluginMounts` is the bare get/put of a driver
plugin's own hooks (``get`` mounts, ``put`` tears down): the generic diff
hooks (`layerstore.naivediff`) wrap it, one way, as containers/storage's
naive diff wraps the bare driver.  Neither module depends on the facade.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Mounts", "PluginMounts"]


class Mounts(Protocol):
    """Make a layer's full filesystem (`get`) or its own files (`diff_files`) visible, and release them (`put`)."""

    def get(self, id: str, mount_label: str = "") -> str:
        """Mount layer `id` and return the path of its root directory (one reference)."""
        ...

    def diff_files(self, id: str) -> str | None:
        """The directory of layer `id`'s own files without a mount (one reference, released by `put`), or None."""
        ...

    def put(self, id: str) -> None:
        """Release one reference taken by `get`."""
        ...


class PluginMounts(Protocol):
    """The ``get``/``put`` hooks of a bare driver plugin (see `layerstore.hookspecs.DriverSpec`)."""

    def get(self, id: str, mount_label: str) -> str:
        """Make layer `id`'s full filesystem visible and return its path (idempotent: no count is kept)."""
        ...

    def put(self, id: str) -> None:
        """Tear down what `get` set up."""
        ...
