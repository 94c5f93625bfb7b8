"""A change of one path in a layer against its parent."""

from __future__ import annotations

import enum

import attrs

__all__ = ["Change", "ChangeKind"]


class ChangeKind(enum.IntEnum):
    """What happened to a path (values as in the Docker engine)."""

    MODIFY = 0
    ADD = 1
    DELETE = 2

    @property
    def letter(self) -> str:
        """The one-letter form used by ``layerstore diff``: C, A or D."""
        return "CAD"[self.value]


@attrs.frozen(order=True)
class Change:
    """`path` is absolute from the layer root (``/etc/passwd``), never ``/`` itself."""

    path: str
    kind: ChangeKind = attrs.field(converter=ChangeKind)

    def __str__(self) -> str:
        return f"{self.kind.letter} {self.path}"
