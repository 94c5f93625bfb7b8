"""Content descriptors, media types and platforms of the OCI image spec (and Docker's equivalents).

A `Descriptor` names a blob by digest and size, with the media type that
says how to read it; manifests, configs and layers are all referred to by
descriptors.  Docker's schema 2 media types are accepted wherever the OCI
ones are, as Docker and Podman accept both.
"""

from __future__ import annotations

import hashlib
import platform as _platform
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import InvalidReference
from ..image import go_architecture
from .reference import is_digest

__all__ = [
    "CONFIG_TYPES",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "MANIFEST_TYPES",
    "MAX_JSON_SIZE",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Descriptor",
    "Platform",
    "layer_compression",
    "sha256_of",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Docker's own archives and some tools label uncompressed layers this way.
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_NONDIST_LAYER: "none",
    DOCKER_LAYER_TAR: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_NONDIST_LAYER_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_NONDIST_LAYER_ZSTD: "zstd",
}
LAYER_TYPES = frozenset(_LAYER_COMPRESSION)
#: Manifests, indexes and configs larger than this are refused, not read into memory (the reference
#: registry's own limit for a manifest).
MAX_JSON_SIZE = 4 << 20


def layer_compression(media_type: str) -> str | None:
    """``"none"``, ``"gzip"`` or ``"zstd"`` for a layer media type; None when it is not a layer type we know."""
    return _LAYER_COMPRESSION.get(media_type)


def sha256_of(data: bytes) -> str:
    """The digest (``sha256:<hex>``) of a blob held in memory: a manifest, an index, a config."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(_instance: object, _attribute: object, value: str) -> None:
    if not is_digest(value):
        raise InvalidReference(f"{value!r} is not a valid content digest (sha256: and 64 lower-case hex digits)")


def _copy_annotations(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


def _check_size(_instance: object, _attribute: object, value: int) -> None:
    if value < 0:
        raise ValueError(f"a descriptor size cannot be negative ({value})")


@attrs.frozen(kw_only=True)
class Platform:
    """An OS/architecture pair as images declare it (``linux/arm64/v8``); names as Go spells them."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (as ``--platform`` takes it); raises ValueError when malformed."""
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"{text!r} is not a platform (expected os/arch[/variant], e.g. linux/arm64/v8)")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")

    @classmethod
    def current(cls) -> Platform:
        """The platform of this machine (``linux/amd64`` here; ARM variants from the machine name)."""
        machine = _platform.machine().lower()
        variant = {"aarch64": "v8", "arm64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(machine, "")
        return cls(os=_platform.system().lower() or "linux", architecture=go_architecture(), variant=variant)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        """Read the ``platform`` object of an index entry (``os``, ``architecture``, ``variant``, ...)."""
        return cls(
            os=str(data.get("os", "")),
            architecture=str(data.get("architecture", "")),
            variant=str(data.get("variant", "") or ""),
            os_version=str(data.get("os.version", "") or ""),
            os_features=tuple(str(f) for f in data.get("os.features", ()) or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``platform`` object as the image spec writes it (empty fields left out)."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@attrs.frozen(kw_only=True)
class Descriptor:
    """A reference to a blob: media type, digest, size, and the optional descriptor fields.

    `annotations` and `urls` are kept as given; `platform` is set on index
    entries.  `to_json` writes the descriptor as the image spec does.
    """

    media_type: str
    digest: str = attrs.field(validator=_check_digest)
    size: int = attrs.field(validator=_check_size)
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_annotations)
    platform: Platform | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        """Read a descriptor object (``mediaType``, ``digest``, ``size``, ...).

        Raises ValueError or KeyError when it is malformed.
        """
        size = data["size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"descriptor size {size!r} is not an integer")
        platform = data.get("platform")
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=size,
            urls=tuple(str(u) for u in data.get("urls", ()) or ()),
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            platform=Platform.from_json(platform) if isinstance(platform, Mapping) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor as a JSON object in the image spec's key order."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out
