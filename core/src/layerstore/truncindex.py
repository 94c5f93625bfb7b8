"""Lookup of image IDs by any unique prefix (the engine's ``truncindex``)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from .errors import AmbiguousID, ImageNotFound, InvalidID

__all__ = ["TruncIndex"]

_MAX_NAMED = 8  # candidates named in an AmbiguousID message


def _check_prefix(prefix: str) -> None:
    if not prefix:
        raise InvalidID("empty image ID prefix: give an image ID or a unique prefix of one")
    if any(c.isspace() for c in prefix):
        raise InvalidID(f"invalid image ID prefix {prefix!r}: IDs contain no spaces")


class TruncIndex:
    """A set of IDs that finds an ID from any prefix that matches only it.

    Prefixes are kept in a sorted list, so a lookup is two binary searches.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        for ident in ids:
            self.add(ident)

    def add(self, ident: str) -> None:
        """Add `ident`; `InvalidID` when it is empty or contains whitespace.  Adding twice is harmless."""
        _check_prefix(ident)
        pos = bisect.bisect_left(self._ids, ident)
        if pos == len(self._ids) or self._ids[pos] != ident:
            self._ids.insert(pos, ident)

    def delete(self, ident: str) -> None:
        """Remove `ident`; `ImageNotFound` when it is not in the index."""
        pos = bisect.bisect_left(self._ids, ident)
        if pos == len(self._ids) or self._ids[pos] != ident:
            raise ImageNotFound(f"no image with ID {ident}")
        del self._ids[pos]

    def matches(self, prefix: str) -> list[str]:
        """Every ID that starts with `prefix`, sorted."""
        _check_prefix(prefix)
        lo = bisect.bisect_left(self._ids, prefix)
        hi = lo
        while hi < len(self._ids) and self._ids[hi].startswith(prefix):
            hi += 1
        return self._ids[lo:hi]

    def get(self, prefix: str) -> str:
        """Return the one ID starting with `prefix` (an exact ID always wins).

        `InvalidID` for an empty prefix or one with spaces, `ImageNotFound`
        when nothing matches, `AmbiguousID` naming the candidates when more
        than one does.
        """
        found = self.matches(prefix)
        if not found:
            raise ImageNotFound(f"no image with ID or ID prefix {prefix!r}; `layerstore ls` lists the images")
        if len(found) == 1 or found[0] == prefix:
            return found[0]
        named = ", ".join(found[:_MAX_NAMED])
        more = f" and {len(found) - _MAX_NAMED} more" if len(found) > _MAX_NAMED else ""
        raise AmbiguousID(
            f"image ID prefix {prefix!r} is ambiguous: it matches {named}{more}; give more characters"
        )

    def __contains__(self, ident: object) -> bool:
        if not isinstance(ident, str):
            return False
        pos = bisect.bisect_left(self._ids, ident)
        return pos < len(self._ids) and self._ids[pos] == ident

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)
