"""Saving stored images to an `ImageDestination`: blobs it lacks, then a manifest (verbatim when it still fits).

The work behind `ImageStore.save` (whose docstring is the contract).  Per
image: each layer is offered to the destination by the blob digests
recorded with it (a registry may have it, or mount it from another
repository); a layer it lacks is rebuilt byte for byte from the graph with
tar-split and compressed on the fly.  The config follows, then the
manifest: the stored one when it describes exactly the blobs written, a new
one otherwise.  Every blob written is recorded with the destination's
location, so the next save there moves nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import attrs

from ..counting import CountingReader
from ..errors import LayerStoreError
from . import descriptor as mt
from ._streams import CompressingReader
from .descriptor import Descriptor, sha256_of
from .layers import LayerBlob, add_layer_blob, layer_blobs
from .records import StoredImage
from .reference import parse_reference
from .v1config import config_from_v1

if TYPE_CHECKING:
    from ..graph import Graph
    from .records import ImageRecords
    from .transport import ImageDestination, TransferProgress

__all__ = ["ImageSaver", "layer_chain_image"]

# Layer media types per compression: (OCI, Docker schema 2).
_LAYER_TYPES = {
    "none": (mt.OCI_LAYER, mt.DOCKER_LAYER_TAR),
    "gzip": (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP),
    "zstd": (mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_ZSTD),
}


def layer_chain_image(graph: Graph, top: str) -> tuple[StoredImage, bytes]:
    """A layer made by ``import`` (no image record) as an image to save, with a config built from the v1 JSON of
    its chain; the image has no names and no stored manifest."""
    chain = []
    current: str | None = top
    while current is not None:
        chain.append(graph.get(current))
        current = chain[-1].parent
    chain.reverse()
    diff_ids = [graph.get_digest(layer.id) for layer in chain]
    newest = chain[-1]
    data = config_from_v1(architecture=newest.architecture, os=newest.os, created=newest.created,
                          run_config=newest.config, diff_ids=diff_ids,
                          history=[{"created": layer.created, **({"comment": layer.comment} if layer.comment else {})}
                                   for layer in chain])
    digest = sha256_of(data)
    image = StoredImage(id=digest.partition(":")[2], names=(), manifest_digest=digest,
                        manifest_media_type="", config_digest=digest, layers=tuple(x.id for x in chain),
                        diff_ids=tuple(diff_ids), created=newest.created, loaded="")
    return image, data


class ImageSaver:
    """Writes images from `graph` to `destination` with layers compressed as `compress`; progress to `progress`."""

    def __init__(self, graph: Graph, records: ImageRecords, destination: ImageDestination, *, compress: str,
                 progress: TransferProgress) -> None:
        if compress not in _LAYER_TYPES:
            raise ValueError(f"compress must be none, gzip or zstd, not {compress!r}")
        self.graph = graph
        self.records = records
        self.destination = destination
        self.compress = compress
        self.progress = progress
        # Blobs this save made present, by the diff ID of their layer: an image may hold the same layer
        # content twice (two layers of one diff ID), and a destination gets each blob once.
        self._made: dict[str, Descriptor] = {}

    def save(self, name: str, image: StoredImage, config_bytes: bytes, stored: bytes | None) -> str:
        """Write `image` (asked for as `name`; `stored` is its manifest as loaded); returns the manifest digest.

        The manifest is tagged with `name` when that is one of the image's
        names, else with all of them.
        """
        destination = self.destination
        supported = destination.supported_manifest_types()
        oci = supported[0] == mt.OCI_MANIFEST if supported else True
        manifest_type = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
        layer_type = _LAYER_TYPES[self.compress][0 if oci else 1]
        config_desc = Descriptor(media_type=mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                                 digest=image.config_digest, size=len(config_bytes))
        layers = [self._save_layer(layer, diff_id, layer_type)
                  for layer, diff_id in zip(image.layers, image.diff_ids, strict=True)]
        if not destination.has_blob(config_desc, mount_from=image.config_locations):
            destination.put_blob(io.BytesIO(config_bytes), config_desc.media_type, expected=config_desc)
        if destination.location:
            with self.records.locked():
                self.records.add_config_location(image.id, destination.location)
        manifest = self._manifest(image, stored, manifest_type, config_desc, layers)
        names = list(image.names)
        with contextlib.suppress(LayerStoreError):
            ref = str(parse_reference(name))
            if ref in image.names:
                names = [ref]
        return destination.put_manifest(manifest, manifest_type, names=names)

    @staticmethod
    def _manifest(image: StoredImage, stored: bytes | None, manifest_type: str, config_desc: Descriptor,
                  layers: list[Descriptor]) -> bytes:
        """The stored manifest when it describes exactly these blobs (same manifest digest), else a new one."""
        stored_json = json.loads(stored) if stored is not None else {}
        if (stored is not None and image.manifest_media_type == manifest_type
                and [d.get("digest") for d in stored_json.get("layers", [])] == [d.digest for d in layers]
                and stored_json.get("config", {}).get("mediaType") == config_desc.media_type):
            return stored
        body: dict[str, Any] = {"schemaVersion": 2, "mediaType": manifest_type,
                                "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]}
        return json.dumps(body, indent=2).encode()

    def _save_layer(self, layer: str, diff_id: str, layer_type: str) -> Descriptor:
        """Make the layer's blob (of `layer_type`) present at the destination: found, mounted or written."""
        compress, destination, progress = self.compress, self.destination, self.progress
        made = self._made.get(diff_id)
        if made is not None:
            progress.blob_started(made, reused=True)
            progress.blob_finished(made)
            self._remember(layer, made)
            return made  # of this save's `layer_type` already
        known = [b for b in layer_blobs(self.graph, layer)
                 if mt.layer_compression(b.media_type) == compress and (compress != "none" or b.digest == diff_id)]
        for blob in known:
            desc = Descriptor(media_type=layer_type, digest=blob.digest, size=blob.size)
            if destination.has_blob(desc, mount_from=blob.locations):
                progress.blob_started(desc, reused=True)
                progress.blob_finished(desc)
                self._remember(layer, desc)
                self._made[diff_id] = desc
                return desc
        expected = None
        if compress == "none":
            size = known[0].size if known else self.graph.tar_size(layer)
            expected = Descriptor(media_type=layer_type, digest=diff_id, size=size)
        placeholder = expected or Descriptor(media_type=layer_type, digest=diff_id, size=0)
        progress.blob_started(placeholder, reused=False)

        with contextlib.closing(self.graph.tar_layer(layer)) as tar:
            stream: BinaryIO = tar
            if compress != "none":
                stream = cast(BinaryIO, CompressingReader(tar, compress))
            counted = CountingReader(stream, lambda n: progress.blob_advanced(placeholder, n))
            # The rebuilt tar checks itself against the layer's recorded digest; when that is the digest the
            # image names, hashing it again while writing would only cost time (0.5 s per GiB).
            self_checked = expected is not None and getattr(tar, "checked_against", None) == expected.digest
            desc = destination.put_blob(cast(BinaryIO, counted), layer_type, expected=expected,
                                        self_checked=self_checked)
        progress.blob_finished(desc)
        self._remember(layer, desc)
        self._made[diff_id] = desc = attrs.evolve(desc, media_type=layer_type)
        return desc

    def _remember(self, layer: str, desc: Descriptor) -> None:
        # Where a form of the layer exists is only a hint for later pushes: a store too full (or
        # read-only) to record it must not fail the save.
        with contextlib.suppress(OSError):
            add_layer_blob(self.graph, layer, LayerBlob.from_descriptor(desc, self.destination.location))
