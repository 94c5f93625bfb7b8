"""What a driver supports, and the options of one `create` call."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["CAPABILITY_NAMES", "Capabilities", "CreateOpts", "capability_attribute"]


def _optional_depth(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"max_depth must be None or >= 1, got {value}")


@attrs.frozen(kw_only=True)
class Capabilities:
    """Capabilities a driver declares.  Every flag defaults to False, so a test
    that needs a capability added later skips on an older driver instead of
    failing.  Test markers name flags with dashes (``native-diff``)."""

    native_diff: bool = False
    """The driver computes diff/changes/diff_size itself instead of comparing trees."""
    quota: bool = False
    """``create`` honours the ``size`` storage option and writes past it fail."""
    idmap: bool = False
    """Ownership is translated through the ID mappings given to the factory."""
    read_only_layers: bool = False
    """``CreateOpts(read_only=True)`` yields a layer whose mounted tree refuses writes."""
    reflink: bool = False
    """Children share file data with their parent (copy-on-write)."""
    max_depth: int | None = attrs.field(default=None, validator=_optional_depth)
    """The longest parent chain the driver can mount (None: no limit of its own)."""


CAPABILITY_NAMES: frozenset[str] = frozenset(
    a.name.replace("_", "-") for a in attrs.fields(Capabilities) if a.type in (bool, "bool")
)


def capability_attribute(name: str) -> str:
    """Turn a marker name (``native-diff``) into the attribute name; `ValueError` if misspelt."""
    if name not in CAPABILITY_NAMES:
        known = ", ".join(sorted(CAPABILITY_NAMES))
        raise ValueError(f"unknown driver capability {name!r}; known capabilities: {known}")
    return name.replace("-", "_")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (value or {}).items()})


@attrs.frozen(kw_only=True)
class CreateOpts:
    """Options of one `create` call."""

    read_only: bool = False
    """The layer is an image layer that will not be written after its diff is applied."""
    mount_label: str = ""
    """SELinux mount label for the layer's mounts ("" for none)."""
    storage_opts: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    """Per-layer driver options, e.g. ``{"size": "10M"}`` for a quota."""
