"""Configuration: which store root, which driver with which options, which ID maps.

Resolution order (first wins):

- driver name: ``--driver``, ``LAYERSTORE_DRIVER``, ``STORAGE_DRIVER`` (as
  containers/storage reads it), the config file's ``driver``, else automatic:
  btrfs when the root is on btrfs, zfs when on zfs, then overlay, then vfs --
  the first that loads here.  A store keeps the driver it was created with:
  its name is recorded in ``<root>/.driver`` when the store is first opened,
  automatic selection on that root always takes it (and fails naming it and
  the reason when it cannot start, never falling back to another driver),
  and naming another driver is an error.  A store made before that record
  existed has its driver's home under the root, which is tried first.
- store root: ``--root``, ``LAYERSTORE_ROOT``, the config file's ``root``,
  else ``/var/lib/layerstore`` for root and ``$XDG_DATA_HOME/layerstore``
  (``~/.local/share/layerstore``) otherwise.
- runroot (per-boot state such as mount reference counts): ``LAYERSTORE_RUNROOT``,
  the config file's ``runroot``, else ``/run/layerstore`` for root and
  ``$XDG_RUNTIME_DIR/layerstore`` otherwise (``/tmp/layerstore-<uid>`` when
  that variable is unset).
- config file: ``--config FILE``, else ``$LAYERSTORE_CONFIG``, else the first
  that exists of ``$XDG_CONFIG_HOME/layerstore/config.toml``
  (``~/.config/...``) and ``/etc/layerstore/config.toml``.  A containers
  ``storage.conf`` or a Docker ``daemon.json`` is read too when named
  explicitly (see `layerstore.config_compat`); ``/etc/containers/storage.conf``
  is never read implicitly (its graphroot belongs to Podman).

Our file is TOML::

    driver = "overlay"
    root = "/srv/layerstore"
    runroot = "/run/layerstore"
    uid_maps = "0:100000:65536"
    gid_maps = "0:100000:65536"

    [drivers.overlay]
    mountopt = "nodev"

Driver options, lowest priority first: the file's ``[drivers.NAME]`` table,
``STORAGE_OPTS`` (comma-separated), then ``-o`` flags.  An option written
``NAME.key=value`` (``overlay.mountopt=nodev``) belongs to driver NAME only;
a plain ``key=value`` belongs to the selected driver only, never to the
others.  A ``[drivers.NAME]`` table or ``NAME.`` scope naming a driver that is
not installed is an error listing the installed drivers.
"""

from __future__ import annotations

from .references import default_runroot
from .selection import (
    AUTO_PRIORITY,
    DRIVER_RECORD,
    auto_candidates,
    backing_filesystem,
    open_driver_for,
    open_store,
    record_driver,
    recorded_driver,
)
from .settings import (
    DRIVER_ALIASES,
    ENVIRONMENT,
    ConfigFile,
    Settings,
    canonical_driver_name,
    default_root,
    find_config_file,
    load_config_file,
    parse_id_map_value,
    parse_options,
    resolve_settings,
)

__all__ = [
    "AUTO_PRIORITY",
    "DRIVER_ALIASES",
    "DRIVER_RECORD",
    "ENVIRONMENT",
    "ConfigFile",
    "Settings",
    "auto_candidates",
    "backing_filesystem",
    "canonical_driver_name",
    "default_root",
    "default_runroot",
    "find_config_file",
    "load_config_file",
    "open_driver_for",
    "open_store",
    "parse_id_map_value",
    "parse_options",
    "record_driver",
    "recorded_driver",
    "resolve_settings",
]
