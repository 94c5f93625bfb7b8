"""Reading a containers ``storage.conf`` or a Docker ``daemon.json`` as a layerstore config file.

What maps (``--config FILE`` names the file; it is never looked up on its own):

storage.conf (TOML)
    ``[storage] driver``, ``graphroot`` (the store root), ``runroot``;
    ``[storage.options] remap-uids`` / ``remap-gids`` (ID maps); other
    scalars of ``[storage.options]`` are options of the selected driver;
    ``[storage.options.NAME]`` tables are options of driver NAME
    (``overlay2`` is ``overlay``); ``pull_options`` is about pulling images,
    not storing layers, and is left alone.
daemon.json (JSON)
    ``storage-driver``, ``storage-opts`` (``["overlay2.mountopt=nodev"]``),
    ``data-root`` (the store root), ``exec-root`` (the runroot).  Keys that
    configure other parts of the Docker daemon (logging, networking,
    registries) are not about storage and are left alone.

Empty values (``""``, ``[]``, empty tables: what Podman's default file is full
of) mean "not set".  A storage setting that layerstore has no equivalent for
is a `ConfigError` naming the key, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import ConfigFile, canonical_driver_name, parse_id_map_value, parse_options

__all__ = ["parse_daemon_json", "parse_storage_conf"]

_OUR_DRIVERS = frozenset({"vfs", "overlay", "btrfs", "zfs"})


def _empty(value: Any) -> bool:
    return value in ("", None) or (isinstance(value, list | dict) and not value)


def _no_equivalent(path: Path, key: str) -> ConfigError:
    return ConfigError(f"config file {path}: {key} has no layerstore equivalent; remove it or leave it empty")


def _scalar(path: Path, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigError(f"config file {path}: {key} must be a string, number or boolean")


def _string(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"config file {path}: {key} must be a string")
    return value


# storage.conf settings about pulling images, not about storing layers: nothing to map, nothing lost.
_ABOUT_PULLS = frozenset({"pull_options"})


def parse_storage_conf(data: Mapping[str, Any], path: Path) -> ConfigFile:
    """Map a decoded containers ``storage.conf`` onto a `ConfigFile`; `ConfigError` naming the key that does not fit."""
    extra = sorted(set(data) - {"storage"})
    if extra:
        raise ConfigError(f"config file {path}: storage.conf has unknown top-level table {extra[0]}; "
                          "only [storage] is read")
    storage = data["storage"]
    if not isinstance(storage, dict):
        raise ConfigError(f"config file {path}: storage must be a table")
    driver = root = runroot = None
    uid_maps: tuple[Any, ...] = ()
    gid_maps: tuple[Any, ...] = ()
    drivers: dict[str, dict[str, str]] = {}
    options: dict[str, str] = {}
    for key, value in storage.items():
        if key == "options":
            continue
        if _empty(value):
            continue
        if key == "driver":
            driver = canonical_driver_name(_string(path, "storage.driver", value))
        elif key == "graphroot":
            root = Path(_string(path, "storage.graphroot", value)).expanduser()
        elif key == "runroot":
            runroot = Path(_string(path, "storage.runroot", value)).expanduser()
        else:
            raise _no_equivalent(path, f"storage.{key}")
    table = storage.get("options", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: storage.options must be a table")
    for key, value in table.items():
        name = f"storage.options.{key}"
        if key in _ABOUT_PULLS:
            continue
        if isinstance(value, dict):
            scoped = {k: _scalar(path, f"{name}.{k}", v) for k, v in value.items() if not _empty(v)}
            if not scoped:
                continue
            driver_name = canonical_driver_name(key)
            if driver_name not in _OUR_DRIVERS:
                raise ConfigError(f"config file {path}: [{name}] is for a driver layerstore does not have "
                                  f"({key}); drivers: {', '.join(sorted(_OUR_DRIVERS))}")
            drivers.setdefault(driver_name, {}).update(scoped)
        elif _empty(value):
            continue
        elif key == "remap-uids":
            uid_maps = parse_id_map_value(value, name, path)
        elif key == "remap-gids":
            gid_maps = parse_id_map_value(value, name, path)
        elif isinstance(value, list):
            raise _no_equivalent(path, name)
        else:
            options[key] = _scalar(path, name, value)
    return ConfigFile(path=path, driver=driver, root=root, runroot=runroot, drivers=drivers, options=options,
                      uid_maps=uid_maps, gid_maps=gid_maps, format="storage.conf")


_DAEMON_STORAGE_KEYS = frozenset({"storage-driver", "storage-opts", "data-root", "exec-root", "graph"})
# daemon.json keys that change where or how layers are stored, which layerstore cannot honour.
_DAEMON_NO_EQUIVALENT = frozenset({"userns-remap", "data-root-mount", "graphdriver", "storage-opt"})


def parse_daemon_json(raw: bytes, path: Path) -> ConfigFile:
    """Map a Docker ``daemon.json`` onto a `ConfigFile`; `ConfigError` naming the key that does not fit."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: a daemon.json must hold a JSON object")
    for key in sorted(_DAEMON_NO_EQUIVALENT & set(data)):
        if not _empty(data[key]):
            raise _no_equivalent(path, key)
    driver = root = runroot = None
    drivers: dict[str, dict[str, str]] = {}
    options: dict[str, str] = {}
    for key in sorted(_DAEMON_STORAGE_KEYS & set(data)):
        value = data[key]
        if _empty(value):
            continue
        if key == "storage-driver":
            driver = canonical_driver_name(_string(path, key, value))
        elif key in ("data-root", "graph"):  # "graph" is the old name of data-root
            root = Path(_string(path, key, value)).expanduser()
        elif key == "exec-root":
            runroot = Path(_string(path, key, value)).expanduser()
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"config file {path}: storage-opts must be a list of \"driver.key=value\" strings")
            for opt, opt_value in parse_options(value, what=f"config file {path}: storage-opts entry").items():
                scope, dot, bare = opt.partition(".")
                if dot:
                    if canonical_driver_name(scope) not in _OUR_DRIVERS:
                        raise _no_equivalent(path, f"storage-opts entry {opt}={opt_value}")
                    drivers.setdefault(canonical_driver_name(scope), {})[bare] = opt_value
                else:
                    options[opt] = opt_value
    return ConfigFile(path=path, driver=driver, root=root, runroot=runroot, drivers=drivers, options=options,
                      format="daemon.json")
