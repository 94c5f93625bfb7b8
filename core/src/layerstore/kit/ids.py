"""Layer IDs as drivers may use them in file and dataset names: one rule, one wording.

Image layers have 64 lower-case hex IDs, but the driver contract takes any
opaque string for read-write layers, so a driver that turns IDs into paths
must refuse the few that would escape or collide: an empty ID, one with
``/`` or NUL, and one starting with ``.`` (``.``, ``..`` and the hidden
names drivers keep beside their layers).  A driver may reserve names of its
own (overlay's ``l`` directory of short links).
"""

from __future__ import annotations

from collections.abc import Collection

from layerstore.errors import InvalidID

__all__ = ["check_layer_id", "is_valid_layer_id"]


def is_valid_layer_id(layer_id: str, reserved: Collection[str] = ()) -> bool:
    """True when `layer_id` is non-empty, has no ``/`` or NUL, does not start with ``.`` and is not `reserved`."""
    return (
        bool(layer_id)
        and "/" not in layer_id
        and "\0" not in layer_id
        and not layer_id.startswith(".")
        and layer_id not in reserved
    )


def check_layer_id(driver: str, layer_id: str, reserved: Collection[str] = ()) -> None:
    """Raise `InvalidID` naming `layer_id`, `driver` and the rule unless `is_valid_layer_id` holds.

    `reserved` lists names the driver keeps for itself; the message names
    them, e.g. ``invalid layer ID 'l' for driver overlay: 'l' is reserved``.
    """
    if is_valid_layer_id(layer_id, reserved):
        return
    if layer_id in reserved:
        raise InvalidID(f"invalid layer ID {layer_id!r} for driver {driver}: {layer_id!r} is reserved")
    raise InvalidID(
        f"invalid layer ID {layer_id!r} for driver {driver}: "
        "a layer ID must be non-empty, without '/' or NUL, and not start with '.'"
    )
