"""Content digests of layers: chain IDs, and the compressed forms in which a layer is known to exist.

A layer that came from an image is stored under its chain ID (the OCI image
spec's ``ChainID(L1) = DiffID(L1)``, ``ChainID(L1..Ln) = sha256(ChainID(L1..Ln-1)
+ " " + DiffID(Ln))``) without the ``sha256:`` prefix, so the same content on
the same parent is stored once and loading an image whose chain is present
reuses it.  Its diff digest (sha256 of the uncompressed tar) is the graph's
``checksum``.  Every compressed (or uncompressed) blob form of the layer that
was read or written is recorded in ``graph/<id>/blobs.json`` with the
locations (`ImageDestination.location`) where that blob is known to exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ..errors import AmbiguousID, CorruptMetadata, ImageNotFound, InvalidID
from ..kit.atomic import atomic_write
from ..kit.locks import held_lock
from .reference import is_digest

if TYPE_CHECKING:
    from ..graph.reader import ImageReader
    from .descriptor import Descriptor

__all__ = ["BLOBS_FILE", "LayerBlob", "add_layer_blob", "chain_id", "chain_ids", "layer_blobs", "resolve_digest"]

BLOBS_FILE = "blobs.json"


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    """The chain ID (``sha256:<hex>``) of a layer with diff digest `diff_id` on the chain `parent_chain`."""
    if parent_chain is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain IDs of every prefix of `diff_ids`, in order."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(chain_id(out[-1] if out else None, diff_id))
    return out


@attrs.frozen(kw_only=True)
class LayerBlob:
    """One blob form of a layer: digest, size and media type, and where the blob is known to exist."""

    digest: str
    size: int
    media_type: str
    locations: tuple[str, ...] = ()

    @classmethod
    def from_descriptor(cls, descriptor: Descriptor, location: str | None) -> LayerBlob:
        """The blob `descriptor` names, known to exist at `location` (nowhere in particular when None)."""
        return cls(digest=descriptor.digest, size=descriptor.size, media_type=descriptor.media_type,
                   locations=(location,) if location else ())

    def to_json(self) -> dict[str, object]:
        """The record as stored and as ``inspect --json`` prints it."""
        return {"digest": self.digest, "size": self.size, "media_type": self.media_type,
                "locations": list(self.locations)}


def layer_blobs(graph: ImageReader, layer_id: str) -> list[LayerBlob]:
    """The recorded blob forms of a layer (empty when none was recorded)."""
    path = graph.image_root(layer_id) / BLOBS_FILE
    try:
        data = json.loads(path.read_bytes())
        return [LayerBlob(digest=str(b["digest"]), size=int(b["size"]), media_type=str(b["media_type"]),
                          locations=tuple(str(x) for x in b.get("locations", ()))) for b in data]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptMetadata(f"{path}: cannot read the layer's blob records ({exc})") from None


def add_layer_blob(graph: ImageReader, layer_id: str, blob: LayerBlob) -> None:
    """Record `blob` as a form of the layer, merging its locations into an existing record of the same digest."""
    with held_lock(graph.image_root(layer_id) / f".{BLOBS_FILE}.lock"):
        blobs = layer_blobs(graph, layer_id)
        for i, old in enumerate(blobs):
            if old.digest == blob.digest:
                merged = tuple(dict.fromkeys((*old.locations, *blob.locations)))
                blobs[i] = attrs.evolve(old, locations=merged)
                break
        else:
            blobs.append(blob)
        atomic_write(graph.image_root(layer_id) / BLOBS_FILE, json.dumps([b.to_json() for b in blobs], indent=1))


def resolve_digest(graph: ImageReader, digest: str) -> str:
    """The layer ID named by a ``sha256:…`` digest: its chain ID, its diff digest, or a recorded blob digest.

    `ImageNotFound` when no layer has it, `AmbiguousID` when the diff digest
    is that of several layers (the same content on different parents).
    """
    if not is_digest(digest):
        raise InvalidID(f"{digest!r} is not a digest (sha256: and 64 lower-case hex digits)")
    hexpart = digest.partition(":")[2]
    ids = graph.ids()
    if hexpart in ids:
        return hexpart
    found = []
    for layer_id in ids:
        root = graph.image_root(layer_id)
        try:
            if (root / "checksum").read_text().strip() == digest:
                found.append(layer_id)
                continue
        except FileNotFoundError:
            pass
        if (root / BLOBS_FILE).exists() and any(b.digest == digest for b in layer_blobs(graph, layer_id)):
            found.append(layer_id)
    if not found:
        raise ImageNotFound(f"no layer has the digest {digest}; `layerstore ls` lists the layers")
    if len(found) > 1:
        raise AmbiguousID(f"digest {digest} names several layers ({', '.join(i[:12] for i in found)}); use an ID")
    return found[0]
