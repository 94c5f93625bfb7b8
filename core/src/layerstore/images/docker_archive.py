"""The docker-archive format (``docker save`` / ``podman save``) as a source and a destination.

Read: the ``manifest.json`` form (``Config``, ``RepoTags``, ``Layers`` per
image; layers plain, gzip or zstd) and the older form without it
(``repositories`` and ``<id>/json``, ``<id>/layer.tar``, ``<id>/VERSION``),
whose config is built from the v1 JSON of its top image.  The archive holds
no manifest, so the source builds a Docker schema 2 manifest from what it
holds: uncompressed layers are described by their ``diff_ids`` entry (the
load verifies it), compressed ones by the digest in their file name or, when
the name has none, by hashing the file once.

Write: ``manifest.json`` with ``<hex>.json`` configs and ``<hex>.tar``
layers, the form ``docker load``, ``podman load`` and ``skopeo copy
docker-archive:`` read.  ``RepoTags`` hold fully qualified names
(``docker.io/library/alpine:3.20``), as podman and skopeo write them:
``docker load`` reads either form, but podman names an image whose tag has
no registry (``alpine:3.20``, Docker's own short form) ``localhost/alpine``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidArchive, LayerStoreError
from ..image import format_created
from . import descriptor as mt
from ._archivebase import ArchiveSource, BlobFileDestination
from ._archivefiles import ArchiveReader
from .descriptor import Descriptor, sha256_of
from .reference import parse_reference
from .v1config import config_from_v1

__all__ = ["DockerArchiveDestination", "DockerArchiveSource", "docker_archive_sources", "is_docker_archive"]

_BLOB_NAME_RE = re.compile(r"(?:.*/)?(?:sha256/)?([0-9a-f]{64})(?:\.tar(?:\.gz)?|/layer\.tar)?")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def is_docker_archive(reader: ArchiveReader) -> bool:
    """True when the archive has ``manifest.json`` or ``repositories`` at the top."""
    return reader.exists("manifest.json") or reader.exists("repositories")


def _json(reader: ArchiveReader, name: str, what: str) -> Any:
    try:
        return json.loads(reader.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArchive(f"{what}: {name} is not valid JSON ({exc})") from None


def _hash_file(reader: ArchiveReader, name: str) -> str:
    digest = hashlib.sha256()
    with reader.open(name) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def docker_archive_sources(reader: ArchiveReader, description: str) -> list[DockerArchiveSource]:
    """One source per image of the archive."""
    if reader.exists("manifest.json"):
        entries = _json(reader, "manifest.json", description)
        if not isinstance(entries, list) or not entries:
            raise InvalidArchive(f"{description}: manifest.json lists no image")
        sources = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or not isinstance(
                    entry.get("Layers"), list):
                raise InvalidArchive(f"{description}: manifest.json entry {i} has no Config or Layers")
            config = reader.read(entry["Config"])
            tags = tuple(str(t) for t in entry.get("RepoTags") or ())
            sources.append(DockerArchiveSource(reader, description, config, [str(x) for x in entry["Layers"]], tags))
        return sources
    return _legacy_sources(reader, description)


def _legacy_sources(reader: ArchiveReader, description: str) -> list[DockerArchiveSource]:
    repositories = _json(reader, "repositories", description)
    if not isinstance(repositories, dict):
        raise InvalidArchive(f"{description}: repositories is not a JSON object")
    tops: dict[str, list[str]] = {}
    for repo, tags in repositories.items():
        for tag, image_id in (tags or {}).items():
            tops.setdefault(str(image_id), []).append(f"{repo}:{tag}")
    if not tops:
        raise InvalidArchive(f"{description}: repositories names no image")
    sources = []
    for top, names in tops.items():
        chain: list[dict[str, Any]] = []
        current: str | None = top
        while current:
            if not reader.exists(f"{current}/json"):
                raise InvalidArchive(f"{description}: image {current}/json is missing from the archive")
            v1 = _json(reader, f"{current}/json", description)
            chain.append(v1)
            current = v1.get("parent") or None
        chain.reverse()
        layers = [f"{v1['id']}/layer.tar" for v1 in chain]
        diff_ids = [_hash_file(reader, name) for name in layers]
        newest = chain[-1]
        data = config_from_v1(architecture=newest.get("architecture"), os=newest.get("os"),
                              created=newest.get("created") or format_created(), run_config=newest.get("config"),
                              diff_ids=diff_ids, history=[_history(v1) for v1 in chain])
        sources.append(DockerArchiveSource(reader, description, data, layers, tuple(names)))
    return sources


def _history(v1: dict[str, Any]) -> dict[str, Any]:
    """A config history entry for one v1 image (fields left out when the v1 JSON has no value)."""
    entry: dict[str, Any] = {}
    if v1.get("created"):
        entry["created"] = v1["created"]
    command = " ".join((v1.get("container_config") or {}).get("Cmd") or [])
    if command:
        entry["created_by"] = command
    if v1.get("comment"):
        entry["comment"] = v1["comment"]
    return entry


class DockerArchiveSource(ArchiveSource):
    """One image of a docker-archive; implements `ImageSource`."""

    def __init__(self, reader: ArchiveReader, description: str, config: bytes, layers: list[str],
                 tags: tuple[str, ...]) -> None:
        super().__init__(reader, description)
        self._config = config
        self._layers = layers
        self._tags = tags
        self._paths: dict[str, str] = {}
        self._manifest: bytes | None = None

    def _describe_layer(self, name: str, diff_id: str | None) -> Descriptor:
        if not self._reader.exists(name):
            raise InvalidArchive(f"{self._description}: layer {name} is missing from the archive")
        with self._reader.open(name) as f:
            head = f.read(4)
        size = self._reader.size(name)
        if head.startswith(_GZIP_MAGIC):
            media_type = mt.DOCKER_LAYER_GZIP
        elif head.startswith(_ZSTD_MAGIC):
            media_type = mt.OCI_LAYER_ZSTD
        else:
            media_type = mt.DOCKER_LAYER_TAR
        if media_type == mt.DOCKER_LAYER_TAR and diff_id is not None:
            digest = diff_id
        else:
            match = _BLOB_NAME_RE.fullmatch(name)
            digest = ("sha256:" + match.group(1)) if match and "blobs/" in name else _hash_file(self._reader, name)
        self._paths[digest] = name
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def top_manifest(self) -> tuple[bytes, str]:
        """A Docker schema 2 manifest built from the archive (see the module docstring)."""
        if self._manifest is None:
            try:
                config = json.loads(self._config)
                diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            except (ValueError, AttributeError, TypeError):
                raise InvalidArchive(f"{self._description}: the image config is not valid JSON") from None
            config_digest = sha256_of(self._config)
            self._paths[config_digest] = "\0config"
            layers = [self._describe_layer(name, diff_ids[i] if i < len(diff_ids) else None)
                      for i, name in enumerate(self._layers)]
            manifest = {
                "schemaVersion": 2,
                "mediaType": mt.DOCKER_MANIFEST,
                "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_digest, "size": len(self._config)},
                "layers": [d.to_json() for d in layers],
            }
            self._manifest = json.dumps(manifest, indent=3).encode()
        return self._manifest, mt.DOCKER_MANIFEST

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A docker-archive has no manifests but the top one."""
        raise InvalidArchive(f"{self._description}: no manifest {digest} in a docker-archive")

    def names(self) -> tuple[str, ...]:
        """The ``RepoTags`` (or ``repositories``) names, normalised."""
        out = []
        for tag in self._tags:
            try:
                out.append(str(parse_reference(tag)))
            except LayerStoreError:
                continue
        return tuple(out)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The config, or a layer file as stored."""
        self.top_manifest()
        name = self._paths.get(descriptor.digest)
        if name is None:
            raise InvalidArchive(f"{self._description}: no blob {descriptor.digest} in the archive")
        if name == "\0config":
            import io

            return io.BytesIO(self._config)
        return self._reader.open(name)


class DockerArchiveDestination(BlobFileDestination):
    """Writes a docker-archive tar (or, `as_dir`, a directory in the same form); implements `ImageDestination`."""

    def __init__(self, path: Path, *, as_dir: bool = False, journal: Path | None = None) -> None:
        super().__init__(path, as_dir=as_dir, description=f"docker-archive:{path}", journal=journal)
        self._entries: list[dict[str, Any]] = []

    def supported_manifest_types(self) -> tuple[str, ...]:
        """Docker schema 2 only (the archive keeps no manifest; it is rebuilt from the config and layers)."""
        return (mt.DOCKER_MANIFEST,)

    def blob_name(self, digest: str, media_type: str) -> str:
        """``<hex>.json`` for a config, ``<hex>.tar`` for a layer."""
        hexpart = digest.partition(":")[2]
        return f"{hexpart}.json" if media_type in mt.CONFIG_TYPES else f"{hexpart}.tar"

    def put_manifest(self, data: bytes, media_type: str, *, names: Sequence[str] = ()) -> str:
        """Add a ``manifest.json`` entry for the manifest's config and layers, tagged with `names`."""
        manifest = json.loads(data)
        config = self.blob_name(manifest["config"]["digest"], mt.DOCKER_CONFIG)
        layers = [self.blob_name(layer["digest"], layer["mediaType"]) for layer in manifest["layers"]]
        tags = [str(parse_reference(n)) for n in names if parse_reference(n).tag]
        for entry in self._entries:  # one image saved under several names is one entry, as `docker save` writes
            if entry["Config"] == config and entry["Layers"] == layers:
                entry["RepoTags"] += [t for t in tags if t not in entry["RepoTags"]]
                break
        else:
            self._entries.append({"Config": config, "RepoTags": tags, "Layers": layers})
        return sha256_of(data)

    def commit(self) -> None:
        """Write ``manifest.json`` and move the archive into place."""
        self._finish({"manifest.json": json.dumps(self._entries).encode()})
