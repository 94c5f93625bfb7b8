"""Settings: the configuration file, the environment and the command-line flags resolved into `Settings`.

Where each value comes from, in order, is described in `layerstore.config`
(the public module, which re-exports this one and `layerstore.selection`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from .errors import ConfigError
from .idtools import IDMap, IDMappings, parse_id_maps
from .references import default_runroot

__all__ = [
    "DRIVER_ALIASES",
    "ENVIRONMENT",
    "ConfigFile",
    "Settings",
    "canonical_driver_name",
    "default_root",
    "default_runroot",
    "find_config_file",
    "load_config_file",
    "parse_id_map_value",
    "parse_options",
    "resolve_settings",
]

_TOP_KEYS = frozenset({"driver", "root", "runroot", "drivers", "uid_maps", "gid_maps"})
DRIVER_ALIASES: Mapping[str, str] = MappingProxyType({"overlay2": "overlay"})
"""Driver names of Docker and containers/storage that mean one of ours."""
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("LAYERSTORE_ROOT", "store root (like --root)"),
    ("LAYERSTORE_DRIVER", "storage driver (like --driver)"),
    ("LAYERSTORE_CONFIG", "config file (like --config)"),
    ("LAYERSTORE_RUNROOT", "directory of per-boot state (mount reference counts)"),
    ("STORAGE_DRIVER", "storage driver, after LAYERSTORE_DRIVER (as containers/storage reads it)"),
    ("STORAGE_OPTS", "comma-separated driver options, below -o (as containers/storage reads it)"),
    ("LAYERSTORE_DEBUG", "1: show a traceback for internal errors"),
    ("LAYERSTORE_TRACE_HOOKS", "1: print every driver hook call"),
)
"""The environment variables the command reads, with what each one sets (for ``--help``)."""


def canonical_driver_name(name: str) -> str:
    """Our name for a driver name (``overlay2`` is ``overlay``); other names unchanged."""
    return DRIVER_ALIASES.get(name, name)


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
    """Options per driver name (``[drivers.NAME]``; ``[storage.options.NAME]``; scoped ``storage-opts``)."""
    options: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    """Options for the selected driver only (``[storage.options]`` scalars of a storage.conf)."""
    uid_maps: tuple[IDMap, ...] = ()
    gid_maps: tuple[IDMap, ...] = ()
    format: str = "layerstore"
    """``layerstore`` (our TOML), ``storage.conf`` or ``daemon.json``."""


@attrs.frozen(kw_only=True)
class Settings:
    """Everything needed to open a store: root, driver choice, options, ID maps and where they came from."""

    root: Path
    driver: str | None
    """The chosen driver name, or None for automatic selection."""
    driver_source: str
    """Where the driver name came from: ``--driver``, ``LAYERSTORE_DRIVER``, the config file, or ``auto``."""
    cli_options: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    """``-o key=value`` options as given (scoped keys keep their ``NAME.`` prefix)."""
    env_options: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    """``STORAGE_OPTS`` options as given (scoped keys keep their ``NAME.`` prefix)."""
    config: ConfigFile = attrs.field(factory=ConfigFile)
    runroot: Path = attrs.field(factory=default_runroot)
    """Directory of per-boot state (mount reference counts), on tmpfs so that a reboot resets it."""

    @property
    def id_maps(self) -> IDMappings:
        """The configured uid/gid maps."""
        return IDMappings(self.config.uid_maps, self.config.gid_maps)

    def options_for(self, driver_name: str, *, selected: bool = True) -> dict[str, str]:
        """The options of `driver_name`, lowest priority first: config file, ``STORAGE_OPTS``, ``-o``.

        Options scoped to another driver (``other.key``) are left out;
        unscoped ones apply only when `selected` (the driver being opened is
        the one chosen, not one merely probed).
        """
        options: dict[str, str] = {}
        if selected:
            options.update(self.config.options)
        options.update(self.config.drivers.get(driver_name, {}))
        for given in (self.env_options, self.cli_options):
            for key, value in given.items():
                scope, dot, bare = key.partition(".")
                if not dot:
                    if selected:
                        options[key] = value
                elif canonical_driver_name(scope) == driver_name:
                    options[bare] = value
        return options

    def check_driver_names(self, installed: Iterable[str]) -> None:
        """`ConfigError` when a ``[drivers.NAME]`` table or a ``NAME.key`` option names no installed driver."""
        known = set(installed)
        # A storage.conf or daemon.json configures every driver of containers/Docker: options for one
        # of those that is not installed here stay unused.  Our own file names drivers on purpose.
        tables = self.config.drivers if self.config.format == "layerstore" else {}
        named = [(name, f"config file {self.config.path}: [drivers.{name}]") for name in tables]
        for given, what in ((self.env_options, "STORAGE_OPTS"), (self.cli_options, "-o")):
            for key in given:
                scope, dot, _ = key.partition(".")
                if dot:
                    named.append((canonical_driver_name(scope), f"{what} option {key}"))
        for name, where in named:
            if name not in known:
                raise ConfigError(
                    f"{where} names driver {name!r}, which is not installed; installed drivers: "
                    f"{', '.join(sorted(known)) or 'none'}"
                )


def parse_options(pairs: Iterable[str], *, what: str = "driver option") -> dict[str, str]:
    """Parse ``key=value`` (or ``driver.key=value``) strings; `ConfigError` for one that is not in that form."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        scope, dot, bare = key.partition(".")
        if not sep or not key or (dot and not (scope and bare)):
            raise ConfigError(
                f"{what} {pair!r} is not in key=value or driver.key=value form (e.g. -o overlay.mountopt=nodev)"
            )
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


def _path_value(data: Mapping[str, Any], key: str, path: Path) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config file {path}: {key} must be a non-empty string")
    return Path(value).expanduser()


def parse_id_map_value(value: Any, key: str, path: Path) -> tuple[IDMap, ...]:
    """Maps from a config value: ``"0:100000:65536"`` or a list of such strings; `ConfigError` naming `key`."""
    return _maps(value, key, path)


def load_config_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Read and validate a config file; `ConfigError` (one line naming the file) on any problem.

    Our TOML format, a containers ``storage.conf`` (a TOML file with a
    ``[storage]`` table) or a Docker ``daemon.json`` (JSON) are recognised by
    their content.
    """
    import tomllib  # only when there is a config file: most commands have none

    from . import config_compat

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if raw.lstrip().startswith(b"{"):
        return config_compat.parse_daemon_json(raw, path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a TOML file is); check the file name") from None
    if isinstance(data.get("storage"), dict):
        return config_compat.parse_storage_conf(data, path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(_TOP_KEYS))}"
        )
    driver = data.get("driver")
    if driver is not None and (not isinstance(driver, str) or not driver):
        raise ConfigError(f"config file {path}: driver must be a non-empty string")
    root = _path_value(data, "root", path)
    runroot = _path_value(data, "runroot", path)
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
        driver=canonical_driver_name(driver) if driver else None,
        root=root,
        runroot=runroot,
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
    env_options = parse_options(filter(None, (o.strip() for o in env.get("STORAGE_OPTS", "").split(","))),
                                what="STORAGE_OPTS option")
    config_path = find_config_file(config, env)
    config_file = load_config_file(config_path) if config_path is not None else ConfigFile()
    if driver is not None and not driver.strip():
        raise ConfigError("--driver needs a driver name; `layerstore drivers` lists the installed ones")
    if driver:
        name, source = driver, "--driver"
    elif env.get("LAYERSTORE_DRIVER"):
        name, source = env["LAYERSTORE_DRIVER"], "LAYERSTORE_DRIVER"
    elif env.get("STORAGE_DRIVER"):
        name, source = env["STORAGE_DRIVER"], "STORAGE_DRIVER"
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
    if config_file.runroot is not None and not env.get("LAYERSTORE_RUNROOT"):
        runroot = config_file.runroot
    else:
        runroot = default_runroot(env)  # $LAYERSTORE_RUNROOT, else the default
    return Settings(
        root=store_root.expanduser().absolute(),
        driver=canonical_driver_name(name) if name else None,
        driver_source=source,
        cli_options=cli_options,
        env_options=env_options,
        config=config_file,
        runroot=runroot.expanduser().absolute(),
    )
