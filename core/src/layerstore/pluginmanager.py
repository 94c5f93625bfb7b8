"""One driver's pluggy plugin manager: the driver plugin alone, checked against the contract, optionally traced.

Every opened driver gets its own manager (pluggy calls every registered
implementation, so a shared one would let one driver answer for another).
The `layerstore.Driver` facade adds the generic fallbacks and reads the
typed relay (`layerstore.hookrelay.HookRelay`) of the manager made here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import pluggy

from . import hookspecs
from .errors import InvalidDriver

__all__ = ["TRACE_ENV", "driver_plugin_manager", "trace_hooks"]

TRACE_ENV = "LAYERSTORE_TRACE_HOOKS"
"""Set to a non-empty value to print every hook call of every opened driver (and its result) on stderr."""


def driver_plugin_manager(name: str, plugin: object) -> pluggy.PluginManager:
    """A plugin manager holding `plugin` alone, traced when `TRACE_ENV` is set.

    Raises `InvalidDriver` naming the hooks when the plugin misses a required
    hook, implements one the contract does not know, or implements one with
    the wrong arguments.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs.DriverSpec)
    try:
        pm.register(plugin, name=f"driver:{name}")
    except pluggy.PluginValidationError as exc:
        raise InvalidDriver(f"driver {name!r} has an invalid hook implementation: {exc}") from exc
    missing = [
        hook
        for hook in hookspecs.REQUIRED_HOOKS
        if not any(impl.plugin is plugin for impl in getattr(pm.hook, hook).get_hookimpls())
    ]
    if missing:
        raise InvalidDriver(f"driver {name!r} does not implement the required hooks: {', '.join(missing)}")
    unknown = [
        hook_name
        for hook_name in dir(pm.hook)
        if not hook_name.startswith("_") and getattr(pm.hook, hook_name).spec is None
    ]
    if unknown:
        raise InvalidDriver(f"driver {name!r} implements unknown hooks: {', '.join(sorted(unknown))}")
    if os.environ.get(TRACE_ENV):
        trace_hooks(pm, name)
    return pm


def trace_hooks(pm: pluggy.PluginManager, driver_name: str) -> None:
    """Print every hook call of `pm` and its result (or exception) on stderr, prefixed with `driver_name`."""

    def before(hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        print(f"layerstore: {driver_name}.{hook_name}({dict(kwargs)})", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        result = f"raised {exc!r}" if exc is not None else f"-> {outcome.get_result()!r}"
        print(f"layerstore: {driver_name}.{hook_name} {result}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)
