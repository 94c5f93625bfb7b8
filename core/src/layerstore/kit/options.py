"""Validation of driver options and per-layer storage options, with one wording for every driver.

Driver options come from the configuration (``[drivers.NAME]``, ``-o``) and
reach the factory; storage options come with each ``create`` call
(``CreateOpts.storage_opts``, e.g. ``size`` for a quota).  An option a
driver does not know is an error, never ignored: both functions raise
`layerstore.errors.ConfigError` naming the option, the driver and what it
accepts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from layerstore.errors import ConfigError

__all__ = ["check_options", "check_storage_options"]


def check_options(driver: str, options: Mapping[str, str], known: Mapping[str, Collection[str] | None]) -> None:
    """Refuse unknown driver options and values outside their choices.

    `known` maps each option name to its allowed values, or to None when
    any value is accepted (the driver checks it itself).  Raises
    `ConfigError`, e.g. ``unknown option 'x' for driver vfs; known options: copy``.
    """
    for key in sorted(options):
        if key not in known:
            names = ", ".join(sorted(known)) or "none (it takes no options)"
            raise ConfigError(f"unknown option {key!r} for driver {driver}; known options: {names}")
        allowed = known[key]
        if allowed is not None and options[key] not in allowed:
            raise ConfigError(
                f"bad value {options[key]!r} for {driver} option {key!r}; choose one of: {', '.join(allowed)}"
            )


def check_storage_options(driver: str, layer_id: str, storage_opts: Mapping[str, str], known: Collection[str]) -> None:
    """Refuse per-layer storage options the driver does not support (`ConfigError` naming the first one)."""
    unknown = sorted(set(storage_opts) - set(known))
    if not unknown:
        return
    accepted = ", ".join(sorted(known)) if known else "none (it takes no per-layer options)"
    raise ConfigError(
        f"unknown storage option {unknown[0]!r} for layer {layer_id} in driver {driver}; "
        f"known storage options: {accepted}"
    )
