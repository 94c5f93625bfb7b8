"""User and group ID mappings (user namespaces).

A layer's files are stored with *host* IDs; tar archives carry *container*
IDs.  Applying a layer maps container IDs to host IDs, exporting maps them
back.  With no mappings both are the identity.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import attrs

from .errors import InvalidArchive

__all__ = ["IDMap", "IDMappings", "RootPair", "format_id_maps", "parse_id_maps"]


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen
class IDMap:
    """One contiguous range: container IDs ``container_id .. container_id+size-1`` are host IDs from ``host_id``."""

    container_id: int = attrs.field(validator=_non_negative)
    host_id: int = attrs.field(validator=_non_negative)
    size: int = attrs.field(validator=_positive)


def _to_maps(value: Iterable[IDMap]) -> tuple[IDMap, ...]:
    return tuple(value)


def _translate(maps: tuple[IDMap, ...], ident: int, *, to_host: bool, kind: str) -> int:
    if not maps:
        return ident
    for m in maps:
        src, dst = (m.container_id, m.host_id) if to_host else (m.host_id, m.container_id)
        if src <= ident < src + m.size:
            return dst + (ident - src)
    side = "container" if to_host else "host"
    raise InvalidArchive(f"{kind} {ident} is not mapped: no {kind} map covers {side} ID {ident}")


@attrs.frozen
class IDMappings:
    """The uid and gid maps of a store; empty tuples mean the identity mapping."""

    uids: tuple[IDMap, ...] = attrs.field(default=(), converter=_to_maps)
    gids: tuple[IDMap, ...] = attrs.field(default=(), converter=_to_maps)

    @property
    def is_identity(self) -> bool:
        """True when no mapping is configured."""
        return not self.uids and not self.gids

    def to_host(self, uid: int, gid: int) -> tuple[int, int]:
        """Map a container (uid, gid) to the host; `InvalidArchive` when outside the maps."""
        return (
            _translate(self.uids, uid, to_host=True, kind="uid"),
            _translate(self.gids, gid, to_host=True, kind="gid"),
        )

    def to_container(self, uid: int, gid: int) -> tuple[int, int]:
        """Map a host (uid, gid) back to the container; `InvalidArchive` when outside the maps."""
        return (
            _translate(self.uids, uid, to_host=False, kind="uid"),
            _translate(self.gids, gid, to_host=False, kind="gid"),
        )

    @property
    def root_pair(self) -> RootPair:
        """The host (uid, gid) of the container's root user: owner of new layer roots and implied directories.

        A property.  Calling it (``root_pair()``, the old spelling) still
        works for one release and warns with a `DeprecationWarning`.
        """
        return RootPair(self.to_host(0, 0))


class RootPair(tuple[int, int]):
    """A host (uid, gid) pair that may still be called, as `IDMappings.root_pair` once was a method."""

    __slots__ = ()

    def __call__(self) -> tuple[int, int]:
        """Deprecated: `IDMappings.root_pair` is a property now; use it without parentheses."""
        warnings.warn(
            "IDMappings.root_pair is a property now: write `id_maps.root_pair`, not `id_maps.root_pair()`",
            DeprecationWarning,
            stacklevel=2,
        )
        return (self[0], self[1])


def parse_id_maps(spec: str) -> tuple[IDMap, ...]:
    """Parse ``"0:100000:65536,..."`` (container:host:size triples) into maps; `ValueError` on bad input."""
    maps = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        fields = part.split(":")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"bad ID map {part!r}: expected container:host:size")
        maps.append(IDMap(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(maps)


def format_id_maps(maps: Iterable[IDMap]) -> str:
    """The maps as ``parse_id_maps`` reads them (``"0:100000:65536,..."``); ``"none"`` for no maps (identity)."""
    text = ",".join(f"{m.container_id}:{m.host_id}:{m.size}" for m in maps)
    return text or "none"
