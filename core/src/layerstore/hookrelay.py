"""`HookRelay`: the typed view of one driver's pluggy hook relay (``PluginManager.hook``).

Every hook is ``firstresult``: the relay returns the first non-None answer,
or None when no implementation answered.  The optional hooks therefore
return ``X | None`` here; the required ones (whose implementation the facade
checked at load time) return their value.  Arguments are keyword-only, as
pluggy requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from .capabilities import Capabilities, CreateOpts
    from .change import Change

__all__ = ["HookRelay"]


class HookRelay(Protocol):
    """The hooks of `layerstore.hookspecs.DriverSpec` as called through a plugin manager."""

    def create(self, *, id: str, parent: str | None, opts: CreateOpts) -> None:
        """See `DriverSpec.create`."""

    def remove(self, *, id: str) -> None:
        """See `DriverSpec.remove`."""

    def get(self, *, id: str, mount_label: str) -> str | None:
        """See `DriverSpec.get` (None only from a broken driver)."""

    def put(self, *, id: str) -> None:
        """See `DriverSpec.put`."""

    def diff_files(self, *, id: str) -> str | None:
        """See `DriverSpec.diff_files`."""

    def exists(self, *, id: str) -> bool | None:
        """See `DriverSpec.exists`."""

    def diff(self, *, id: str, parent: str | None) -> BinaryIO:
        """See `DriverSpec.diff` (the generic fallback always answers)."""
        ...

    def apply_diff(self, *, id: str, parent: str | None, stream: BinaryIO) -> int:
        """See `DriverSpec.apply_diff` (the generic fallback always answers)."""
        ...

    def diff_size(self, *, id: str, parent: str | None) -> int:
        """See `DriverSpec.diff_size` (the generic fallback always answers)."""
        ...

    def changes(self, *, id: str, parent: str | None) -> list[Change]:
        """See `DriverSpec.changes` (the generic fallback always answers)."""
        ...

    def status(self) -> list[tuple[str, str]] | None:
        """See `DriverSpec.status`."""

    def metadata(self, *, id: str) -> dict[str, str] | None:
        """See `DriverSpec.metadata`."""

    def cleanup(self) -> None:
        """See `DriverSpec.cleanup`."""

    def gc(self, *, live_ids: list[str]) -> list[str] | None:
        """See `DriverSpec.gc`."""

    def orphans(self) -> list[str] | None:
        """See `DriverSpec.orphans`."""

    def capabilities(self) -> Capabilities | None:
        """See `DriverSpec.capabilities`."""
