"""The exception types of layerstore.

Every error that layerstore raises on purpose derives from `LayerStoreError`.
Messages are one line, name the thing that is wrong (layer ID, path, tar
entry, driver, file) and, when there is one, the fix.  The command line prints
``str(error)`` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AmbiguousID",
    "AuthenticationFailed",
    "CommandError",
    "CommandFailed",
    "ConfigError",
    "CorruptMetadata",
    "DigestMismatch",
    "DigestNotSet",
    "DriverNotFound",
    "DriverNotSupported",
    "IDMapMismatch",
    "ImageNotFound",
    "InvalidArchive",
    "InvalidDriver",
    "InvalidID",
    "InvalidReference",
    "LayerExists",
    "LayerInUse",
    "LayerNotFound",
    "LayerStoreError",
    "LimitExceeded",
    "RegistryError",
    "StorageError",
    "StorageFull",
    "UnsupportedMediaType",
]


class LayerStoreError(Exception):
    """Base class of every error layerstore raises on purpose."""


class ConfigError(LayerStoreError):
    """The configuration (file, environment, options) is malformed or contradictory."""


class DriverNotFound(LayerStoreError):
    """No installed driver has the requested name."""


class DriverNotSupported(LayerStoreError):
    """The driver is installed but cannot run here; the message says why."""


class InvalidDriver(LayerStoreError):
    """An installed driver is broken: its factory or hook implementations do not fit the contract."""


class LayerNotFound(LayerStoreError):
    """The driver holds no layer with this ID."""


class LayerExists(LayerStoreError):
    """A layer with this ID already exists in the driver."""


class LayerInUse(LayerStoreError):
    """The layer cannot be removed: other layers are built on it, or it is mounted or held."""


class LimitExceeded(LayerStoreError):
    """A driver limit (such as the maximum chain depth) would be exceeded."""


class ImageNotFound(LayerStoreError):
    """No image in the store has this ID or prefix."""


class AmbiguousID(LayerStoreError):
    """An ID prefix matches more than one image; the message names the candidates."""


class InvalidID(LayerStoreError):
    """A string is not a valid image ID, ID prefix or layer ID."""


class InvalidArchive(LayerStoreError):
    """A layer archive is unsafe, corrupt, truncated or not a tar; the message names the entry."""


class CorruptMetadata(LayerStoreError):
    """Stored metadata (image JSON, tar-split data, reference counts) cannot be read."""


class DigestMismatch(LayerStoreError):
    """Content read back does not match its recorded checksum; the message names the file."""


class DigestNotSet(LayerStoreError):
    """The image has no recorded layer digest (``checksum`` file)."""


class StorageError(LayerStoreError):
    """The storage backend (a daemon, pool or filesystem) does not answer or work; the message names it and the fix."""


class StorageFull(LayerStoreError):
    """The backing storage ran out of space or quota; nothing partial was kept."""


class CommandFailed(LayerStoreError):
    """An external command (mount, btrfs, zfs, ...) failed; the message shows the command and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = " ".join(stderr.split()) or "no error output"
        super().__init__(f"command failed ({returncode}): {' '.join(self.argv)}: {detail}")


class CommandError(LayerStoreError):
    """A command failed in a way already explained by its output (e.g. `check` found bad layers)."""


class IDMapMismatch(ConfigError):
    """A store is opened with uid/gid maps other than those it was created with; the message names both."""


class InvalidReference(LayerStoreError):
    """A string is not a valid image reference (``[registry/]repository[:tag][@digest]``)."""


class UnsupportedMediaType(LayerStoreError):
    """A manifest, config or layer has a media type this version cannot handle; the message names it."""


class RegistryError(LayerStoreError):
    """A registry could not be reached or answered unexpectedly; the message names the registry and the request."""


class AuthenticationFailed(RegistryError):
    """A registry refused the credentials (or needs some); the message says how to log in."""
