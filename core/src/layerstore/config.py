"""Configuration: which store root, which driver with which options, which ID maps.

Resolution order (first wins):

- driver name: ``--driver``, ``LAYERSTORE_DRIVER``, the config file's
  ``driver``, else automatic: btrfs when the root is on btrfs, zfs when on
  zfs, then overlay, then vfs -- the first that loads here.  A driver whose
  home already exists under the root is tried first, so a store keeps the
  driver it was created with.
- store root: ``--root``, ``LAYERSTORE_ROOT``, the config file's ``root``,
  else ``/var/lib/layerstore`` for root and ``$XDG_DATA_HOME/layerstore``
  (``~/.local/share/layerstore``) otherwise.
- config file: ``--config FILE``, else ``$LAYERSTORE_CONFIG``, else the first
  that exists of ``$XDG_CONFIG_HOME/layerstore/config.toml``
  (``~/.config/...``) and ``/etc/layerstore/config.toml``.

The file is TOML::

    driver = "overlay"
    root = "/srv/layerstore"
    uid_maps = "0:100000:65536"
    gid_maps = "0:100000:65536"

    [drivers.overlay]
    mount_program = "..."

``-o key=value`` options override the file's options of the chosen driver.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError, DriverNotFound, DriverNotSupported, LayerStoreError
from .idtools import IDMap, IDMappings, parse_id_maps
from .mountinfo import mount_of

if TYPE_CHECKING:
    from .drivers import Driver
    from .graph import Graph

__all__ = [
    "AUTO_PRIORITY",
    "ConfigFile",
    "Settings",
    "backing_filesystem",
    "default_root",
    "find_config_file",
    "load_config_file",
    "open_driver_for",
    "open_store",
    "parse_options",
    "resolve_settings",
]

AUTO_PRIORITY: tuple[str, ...] = ("overlay", "vfs")
_FS_DRIVERS = {"btrfs": "btrfs", "zfs": "zfs", "fuse.zfs": "zfs"}
_TOP_KEYS = frozenset({"driver", "root", "runroot", "drivers", "uid_maps", "gid_maps"})


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _frozen_tables(value: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in value.items()})


@attrs.frozen(kw_only=True)
class ConfigFile:
    """The validated content of a config file."""

    path: Path | None = None
    driver: str | None = None
    root: Path | None = None
    runroot: Path | None = None
    """Where mount references live (``$LAYERSTORE_RUNROOT`` wins; see `layerstore.references`)."""
    drivers: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, converter=_frozen_tables)
    uid_maps: tuple[IDMap, ...] = ()
    gid_maps: tuple[IDMap, ...] = ()


@attrs.frozen(kw_only=True)
class Settings:
    """Everything needed to open a store: root, driver choice, options, ID maps and where they came from."""

    root: Path
    driver: str | None
    """The chosen driver name, or None for automatic selection."""
    driver_source: str
    """Where the driver name came from: ``--driver``, ``LAYERSTORE_DRIVER``, the config file, or ``auto``."""
    cli_options: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    """``-o key=value`` options (override the config file's options of the chosen driver)."""
    config: ConfigFile = attrs.field(factory=ConfigFile)

    @property
    def id_maps(self) -> IDMappings:
        """The configured uid/gid maps."""
        return IDMappings(self.config.uid_maps, self.config.gid_maps)

    def options_for(self, driver_name: str) -> dict[str, str]:
        """The options of `driver_name`: the config file's table, overridden by ``-o`` options."""
        options = dict(self.config.drivers.get(driver_name, {}))
        options.update(self.cli_options)
        return options


def parse_options(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings; `ConfigError` for one that is not in that form."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"driver option {pair!r} is not in key=value form (e.g. -o size=10G)")
        result[key] = value
    return result


def default_root(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``/var/lib/layerstore`` for root, else ``$XDG_DATA_HOME/layerstore`` (``~/.local/share``)."""
    env = os.environ if environ is None else environ
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/layerstore")
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(data_home) / "layerstore"


def find_config_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: `explicit`, ``$LAYERSTORE_CONFIG`` (both must exist), else the first default found."""
    env = os.environ if environ is None else environ
    for given, what in ((explicit, "--config"), (env.get("LAYERSTORE_CONFIG") or None, "LAYERSTORE_CONFIG")):
        if given is not None:
            path = Path(given)
            if not path.is_file():
                raise ConfigError(f"config file {path} (from {what}) does not exist")
            return path
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    for candidate in (Path(config_home) / "layerstore" / "config.toml", Path("/etc/layerstore/config.toml")):
        if candidate.is_file():
            return candidate
    return None


def _maps(value: Any, key: str, path: Path) -> tuple[IDMap, ...]:
    if isinstance(value, str):
        specs = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        specs = value
    else:
        raise ConfigError(f"config file {path}: {key} must be a string like \"0:100000:65536\" or a list of them")
    try:
        return tuple(m for spec in specs for m in parse_id_maps(spec))
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {key}: {exc}") from None


def load_config_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Read and validate a TOML config file; `ConfigError` (one line naming the file) on any problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a TOML file is); check the file name") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(_TOP_KEYS))}"
        )
    driver = data.get("driver")
    if driver is not None and (not isinstance(driver, str) or not driver):
        raise ConfigError(f"config file {path}: driver must be a non-empty string")
    root = data.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise ConfigError(f"config file {path}: root must be a non-empty string")
    runroot = data.get("runroot")
    if runroot is not None and (not isinstance(runroot, str) or not runroot):
        raise ConfigError(f"config file {path}: runroot must be a non-empty string")
    drivers: dict[str, Mapping[str, str]] = {}
    tables = data.get("drivers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"config file {path}: drivers must be a table of [drivers.NAME] tables")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: drivers.{name} must be a table of options")
        options = {}
        for key, value in table.items():
            if isinstance(value, bool):
                options[key] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                options[key] = str(value)
            else:
                raise ConfigError(f"config file {path}: drivers.{name}.{key} must be a string, number or boolean")
        drivers[name] = MappingProxyType(options)
    return ConfigFile(
        path=path,
        driver=driver,
        root=Path(root).expanduser() if root else None,
        runroot=Path(runroot).expanduser() if runroot else None,
        drivers=drivers,
        uid_maps=_maps(data["uid_maps"], "uid_maps", path) if "uid_maps" in data else (),
        gid_maps=_maps(data["gid_maps"], "gid_maps", path) if "gid_maps" in data else (),
    )


def resolve_settings(
    *,
    root: str | os.PathLike[str] | None = None,
    driver: str | None = None,
    options: Iterable[str] = (),
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Combine flags, environment, config file and defaults into `Settings` (see the module docstring)."""
    env = os.environ if environ is None else environ
    cli_options = parse_options(options)
    config_path = find_config_file(config, env)
    config_file = load_config_file(config_path) if config_path is not None else ConfigFile()
    if driver is not None and not driver.strip():
        raise ConfigError("--driver needs a driver name; `layerstore drivers` lists the installed ones")
    if driver:
        name, source = driver, "--driver"
    elif env.get("LAYERSTORE_DRIVER"):
        name, source = env["LAYERSTORE_DRIVER"], "LAYERSTORE_DRIVER"
    elif config_file.driver:
        name, source = config_file.driver, f"config file {config_file.path}"
    else:
        name, source = None, "auto"
    if root:
        store_root = Path(root)
    elif env.get("LAYERSTORE_ROOT"):
        store_root = Path(env["LAYERSTORE_ROOT"])
    elif config_file.root is not None:
        store_root = config_file.root
    else:
        store_root = default_root(env)
    return Settings(
        root=store_root.expanduser().absolute(),
        driver=name,
        driver_source=source,
        cli_options=cli_options,
        config=config_file,
    )


def backing_filesystem(path: str | os.PathLike[str]) -> str:
    """The filesystem type (as in /proc/self/mountinfo) of the mount holding `path` or its nearest existing parent."""
    try:
        entry = mount_of(path)
    except OSError:
        return ""
    return entry.fstype if entry is not None else ""


def auto_candidates(root: Path, installed: Iterable[str]) -> list[str]:
    """The drivers automatic selection tries, in order, for a store at `root`."""
    fs_driver = _FS_DRIVERS.get(backing_filesystem(root))
    order = ([fs_driver] if fs_driver else []) + [d for d in AUTO_PRIORITY if d != fs_driver]
    installed_set = set(installed)
    # A store keeps the driver it was created with: a driver whose home holds data goes first.
    prior = [d for d in sorted(installed_set) if (root / d).is_dir() and any((root / d).iterdir())]
    return list(dict.fromkeys([*(d for d in order if d in prior), *prior, *order]))


def _load(name: str, settings: Settings) -> Driver:
    from .drivers import load_driver

    home = settings.root / name
    created = [p for p in (settings.root, home) if not p.exists()]
    try:
        runroot = None if os.environ.get("LAYERSTORE_RUNROOT") else settings.config.runroot
        return load_driver(name, home, settings.options_for(name), settings.id_maps, runroot=runroot)
    except BaseException:
        # Do not leave empty directories behind for a driver that said no.
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                break
        raise


def open_driver_for(settings: Settings) -> Driver:
    """Open the driver the settings choose (automatic selection when no name is given).

    `DriverNotFound` / `DriverNotSupported` for a named driver; for automatic
    selection one `DriverNotSupported` listing each candidate's reason.
    """
    if settings.driver is not None:
        return _load(settings.driver, settings)
    from .drivers import available_drivers

    installed = available_drivers()
    if not installed:
        raise DriverNotFound("no storage driver is installed; install one, e.g. `pip install layerstore-vfs`")
    reasons = []
    for name in auto_candidates(settings.root, installed):
        if name not in installed:
            reasons.append(f"{name}: not installed")
            continue
        try:
            return _load(name, settings)
        except (DriverNotSupported, DriverNotFound) as exc:
            reasons.append(f"{name}: {exc}")
    raise DriverNotSupported(f"no storage driver can run on {settings.root}: " + "; ".join(reasons))


def open_store(settings: Settings) -> tuple[Driver, Graph]:
    """Open the driver and the image store of `settings`.  Call ``driver.cleanup()`` when done."""
    from .graph import Graph

    driver = open_driver_for(settings)
    try:
        graph = Graph(settings.root, driver, settings.config.uid_maps, settings.config.gid_maps)
    except BaseException:
        try:
            driver.cleanup()
        except LayerStoreError:
            pass
        raise
    return driver, graph
