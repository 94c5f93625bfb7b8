"""The OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``) as a source and a destination.

Read from a directory or a tar of one; written as either.  Each image of a
layout is one `OciLayoutSource`: an ``index.json`` entry (a manifest, or a
nested index of a multi-platform image), or, when ``index.json`` lists
several platforms of one image without names, the whole index.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import DigestMismatch, InvalidArchive, LayerStoreError, UnsupportedMediaType
from . import descriptor as mt
from ._archivebase import ArchiveSource, BlobFileDestination
from ._archivefiles import ArchiveReader
from .descriptor import MAX_JSON_SIZE, Descriptor, sha256_of
from .reference import is_digest, parse_reference

__all__ = ["REF_NAME", "OciLayoutDestination", "OciLayoutSource", "is_oci_layout", "oci_layout_sources"]

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'


def is_oci_layout(reader: ArchiveReader) -> bool:
    """True when the archive has ``oci-layout`` at the top."""
    return reader.exists("oci-layout")


def _blob_path(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _read_blob(reader: ArchiveReader, desc: Descriptor, what: str) -> bytes:
    if desc.size > MAX_JSON_SIZE:
        raise InvalidArchive(f"{what}: {desc.digest} is larger than 4 MiB; refusing to read it as JSON")
    if not reader.exists(_blob_path(desc.digest)):
        raise InvalidArchive(f"{what}: blob {desc.digest} is missing from {reader.label}")
    data = reader.read(_blob_path(desc.digest))
    if len(data) != desc.size or sha256_of(data) != desc.digest:
        raise DigestMismatch(f"{what}: blob {desc.digest} does not match its digest or size")
    return data


def oci_layout_sources(reader: ArchiveReader, description: str) -> list[OciLayoutSource]:
    """One source per image of the layout (see the module docstring)."""
    layout = reader.read("oci-layout")
    try:
        version = json.loads(layout).get("imageLayoutVersion")
        index = json.loads(reader.read("index.json"))
        entries = [Descriptor.from_json(m) for m in index.get("manifests") or []]
    except InvalidArchive:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArchive(f"{description}: index.json or oci-layout is malformed ({exc})") from None
    if version != "1.0.0":
        raise UnsupportedMediaType(f"{description}: OCI layout version {version!r} is not supported (only 1.0.0)")
    if not entries:
        raise InvalidArchive(f"{description}: index.json lists no image")
    if len(entries) > 1 and all(e.platform is not None and REF_NAME not in e.annotations for e in entries):
        data = reader.read("index.json")
        return [OciLayoutSource(reader, description, (data, mt.OCI_INDEX), ())]
    sources = []
    for entry in entries:
        if entry.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
            raise UnsupportedMediaType(f"{description}: index.json names {entry.digest} with media type "
                                       f"{entry.media_type!r}, not a manifest or index")
        data = _read_blob(reader, entry, description)
        name = entry.annotations.get(CONTAINERD_NAME) or entry.annotations.get(REF_NAME, "")
        # A ref name without ':' or '/' is a bare tag ("latest"), not an image name.
        named = (name,) if ":" in name or "/" in name else ()
        sources.append(OciLayoutSource(reader, description, (data, entry.media_type), named))
    return sources


class OciLayoutSource(ArchiveSource):
    """One image of an OCI layout (see `oci_layout_sources`); implements `ImageSource`."""

    def __init__(self, reader: ArchiveReader, description: str, top: tuple[bytes, str],
                 names: tuple[str, ...]) -> None:
        super().__init__(reader, description)
        self._top = top
        self._names = names

    def top_manifest(self) -> tuple[bytes, str]:
        """The manifest or index that ``index.json`` names, verbatim."""
        return self._top

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A manifest of the layout by digest (from a multi-platform index)."""
        if not is_digest(digest):
            raise InvalidArchive(f"{self._description}: {digest!r} is not a digest")
        path = _blob_path(digest)
        if not self._reader.exists(path):
            raise InvalidArchive(f"{self._description}: manifest {digest} is missing from the layout")
        data = self._reader.read(path)
        try:
            media_type = str(json.loads(data).get("mediaType") or mt.OCI_MANIFEST)
        except (ValueError, AttributeError):
            raise InvalidArchive(f"{self._description}: manifest {digest} is not JSON") from None
        return data, media_type

    def names(self) -> tuple[str, ...]:
        """The entry's ``io.containerd.image.name``, or its ``org.opencontainers.image.ref.name`` when that is
        a full reference (not a bare tag)."""
        out = []
        for name in self._names:
            with contextlib.suppress(LayerStoreError):
                out.append(str(parse_reference(name)))
        return tuple(out)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """The blob file, streamed."""
        path = _blob_path(descriptor.digest)
        if not self._reader.exists(path):
            raise InvalidArchive(f"{self._description}: blob {descriptor.digest} is missing from the layout")
        return self._reader.open(path)


class OciLayoutDestination(BlobFileDestination):
    """Writes an OCI layout to a new directory or a tar file; implements `ImageDestination`."""

    def __init__(self, path: Path, *, as_dir: bool, journal: Path | None = None) -> None:
        super().__init__(path, as_dir=as_dir, description=f"oci{'-dir' if as_dir else ''}:{path}", journal=journal)
        self._manifests: list[dict[str, Any]] = []

    def supported_manifest_types(self) -> tuple[str, ...]:
        """OCI manifests first, Docker's accepted."""
        return (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST)

    def blob_name(self, digest: str, media_type: str) -> str:
        """``blobs/<alg>/<hex>``."""
        return _blob_path(digest)

    def put_manifest(self, data: bytes, media_type: str, *, names: Sequence[str] = ()) -> str:
        """Write the manifest blob and remember an ``index.json`` entry per name."""
        digest = sha256_of(data)
        if not self._writer.has(_blob_path(digest)):
            self._writer.write_bytes(_blob_path(digest), data)
        desc = Descriptor(media_type=media_type, digest=digest, size=len(data))
        for name in names or (None,):
            entry = desc.to_json()
            if name is not None:
                tag = parse_reference(name).tag
                entry["annotations"] = {REF_NAME: tag or name, CONTAINERD_NAME: name}
            self._manifests.append(entry)
        return digest

    def commit(self) -> None:
        """Write ``oci-layout`` and ``index.json`` and move the layout into place."""
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": self._manifests}
        self._finish({"oci-layout": _LAYOUT, "index.json": json.dumps(index).encode()})
