"""The canonical (AUFS-style) whiteout names used in layer tars.

``.wh.<name>`` in a directory deletes ``<name>`` of the lower layers;
``.wh..wh..opq`` in a directory hides every lower entry of that directory.
Other names starting with ``.wh..wh.`` are AUFS bookkeeping and carry no
content.  The overlay driver's kernel form is a 0/0 character device for a
whiteout and the xattr ``<prefix>opaque = "y"`` for an opaque directory.
"""

from __future__ import annotations

__all__ = [
    "OPAQUE",
    "OVERLAY_OPAQUE_VALUE",
    "OVERLAY_XATTR_PREFIXES",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_PREFIX",
    "whiteout_name",
]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_VALUE = b"y"
# xattrs of the overlay filesystem itself: never taken from an archive, never exported
OVERLAY_XATTR_PREFIXES: tuple[str, ...] = ("trusted.overlay.", "user.overlay.")


def whiteout_name(path: str) -> str:
    """Return the tar member name that deletes `path` (relative, ``a/b`` -> ``a/.wh.b``)."""
    head, _, base = path.rpartition("/")
    return f"{head}/{WHITEOUT_PREFIX}{base}" if head else f"{WHITEOUT_PREFIX}{base}"
