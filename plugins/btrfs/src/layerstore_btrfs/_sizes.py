"""Human sizes (``10M``, ``1.5G``) for the ``size`` storage option."""

from __future__ import annotations

import re

from layerstore.errors import ConfigError

__all__ = ["parse_size"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse a size in bytes with an optional binary unit (k, M, G, T, P; ``MB``/``MiB`` spelled out too).

    ``"10M"`` is 10 MiB, ``"1.5G"`` 1.5 GiB, ``"4096"`` 4096 bytes.  Anything
    else, or a size below one byte, raises `ConfigError` naming `what`.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ConfigError(f"invalid {what} {text!r}: use a number with an optional unit k, M, G, T (e.g. 10M)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 1:
        raise ConfigError(f"invalid {what} {text!r}: it must be at least 1 byte")
    return value
