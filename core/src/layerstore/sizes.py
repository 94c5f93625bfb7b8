"""Human sizes: parsed (``10M``, ``1.5G``, ``512KiB``, the ``size`` storage option of drivers) and formatted."""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
# A unit may be spelled k, K, KB, KiB or Ki; a plain byte count may end in B.
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b|i)?|b)?\s*", re.IGNORECASE)


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse a size in bytes with an optional binary unit (k, M, G, T, P, E; ``MB``/``MiB`` spelled out too).

    ``"10M"`` is 10 MiB, ``"1.5G"`` 1.5 GiB, ``"4096"`` 4096 bytes.  Anything
    else, or a size below one byte, raises `ConfigError` naming `what`.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"invalid {what} {text!r}: not a size; use bytes or a number with a unit k, M, G, T (e.g. 10M)"
        )
    value = int(float(match.group(1)) * 1024 ** _UNITS[(match.group(2) or "").lower()])
    if value < 1:
        raise ConfigError(f"invalid {what} {text!r}: it must be at least 1 byte")
    return value


def format_size(size: int, *, binary: bool = False) -> str:
    """`size` bytes for people.

    SI units with three significant digits, as ``docker images`` shows them
    (``"1.23 MB"``), or with `binary` powers of 1024 and one decimal
    (``"1.2 MiB"``); below one unit, whole bytes (``"999 B"``).
    """
    base, units, spec = (
        (1024, ("KiB", "MiB", "GiB", "TiB"), ".1f") if binary else (1000, ("kB", "MB", "GB", "TB"), ".3g")
    )
    if size < base:
        return f"{size} B"
    value = size / base
    for unit in units:
        if value < base or unit == units[-1]:
            break
        value /= base
    return f"{value:{spec}} {unit}"
