"""Loading one image from an `ImageSource` into the store: verify, reuse stored layers, apply the rest, record.

The work behind `ImageStore.load` (whose docstring is the contract).  The
steps: the top manifest (from an index, the one for the wanted platform),
the config, the chain IDs of its ``diff_ids``; then each layer whose chain
ID is not stored is read through a digest-checking reader and registered in
the graph (decompressed and recorded with tar-split there), and its
uncompressed digest is compared with the config's; last, the record and the
names are written under the image store's lock.  A session retains the
chain's layers in the graph meanwhile, so that no concurrent removal takes
a layer this load is about to use.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..errors import DigestMismatch, ImageNotFound, InvalidArchive, LayerStoreError, UnsupportedMediaType
from ..image import Image, format_created
from . import descriptor as mt
from ._streams import VerifyingReader
from .descriptor import MAX_JSON_SIZE, Descriptor, Platform, sha256_of
from .layers import LayerBlob, add_layer_blob, chain_ids, layer_blobs
from .records import NewImage, StoredImage
from .reference import is_digest, parse_reference
from .transport import TransferProgress

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..graph import Graph
    from .records import ImageRecords
    from .transport import ImageSource

__all__ = ["ImageLoader", "pick_platform"]


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArchive(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidArchive(f"{what} is not a JSON object")
    return value


def _descriptor(data: Any, what: str) -> Descriptor:
    try:
        return Descriptor.from_json(data)
    except (ValueError, KeyError, TypeError, LayerStoreError) as exc:
        raise InvalidArchive(f"{what}: malformed descriptor ({exc})") from None


def pick_platform(index: dict[str, Any], platform: Platform | None, what: str) -> Descriptor:
    """The manifest descriptor of an index that fits `platform` (default: this machine's)."""
    wanted = platform or Platform.current()
    entries = [_descriptor(m, f"{what}: manifests[{i}]") for i, m in enumerate(index.get("manifests") or [])]
    fits = []
    for entry in entries:
        p = entry.platform
        if p is None or p.os != wanted.os or p.architecture != wanted.architecture:
            continue
        if wanted.variant and p.variant and p.variant != wanted.variant:
            continue
        fits.append(entry)
    if not fits:
        have = ", ".join(str(e.platform) for e in entries if e.platform) or "none"
        raise ImageNotFound(f"{what} has no image for {wanted} (it has: {have}); choose one with --platform")
    return fits[0]


def _diff_ids(config: dict[str, Any], count: int, what: str) -> list[str]:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        raise InvalidArchive(f"{what}: the config has no valid rootfs.diff_ids")
    if len(diff_ids) != count:
        raise InvalidArchive(f"{what}: the config lists {len(diff_ids)} diff_ids but the manifest {count} layers")
    return diff_ids


class ImageLoader:
    """Loads images from `source` into `graph` and `records`, reporting blob transfers to `progress`."""

    def __init__(self, graph: Graph, records: ImageRecords, source: ImageSource, progress: TransferProgress) -> None:
        self.graph = graph
        self.records = records
        self.source = source
        self.progress = progress
        self._what = source.description

    def load(self, *, names: Sequence[str], platform: Platform | None, digest: str | None = None) -> str:
        """Load the source's image (see `ImageStore.load`); returns its ID."""
        all_names = [str(parse_reference(n)) for n in (*names, *self.source.names())]
        if digest is not None:
            known = self._stored_as(digest, platform)
            if known is not None and self._reuse(known, all_names):
                return known.id
        manifest_bytes, manifest_type, index_bytes = self._manifest(platform)
        config_desc, layer_descs = self._descriptors(_parse_json(manifest_bytes, f"{self._what}: manifest"))
        config_bytes = self._read_config(config_desc)
        config = _parse_json(config_bytes, f"{self._what}: config {config_desc.digest}")
        diff_ids = _diff_ids(config, len(layer_descs), self._what)
        chains = [c.partition(":")[2] for c in chain_ids(diff_ids)]
        image_id = config_desc.digest.partition(":")[2]

        session = "load-" + uuid.uuid4().hex
        present = [self.graph.exists(c) for c in chains]
        self.graph.retain(session, *(c for c, p in zip(chains, present, strict=True) if p))
        added: list[str] = []
        try:
            self.source.prefetch([d for d, p in zip(layer_descs, present, strict=True) if not p])
            parent: str | None = None
            for i, (desc, chain, have) in enumerate(zip(layer_descs, chains, present, strict=True)):
                if have:
                    self.progress.blob_started(desc, reused=True)
                    self._note_location(chain, desc)
                    self.progress.blob_finished(desc)
                else:
                    try:
                        stored = self._apply(desc, chain=chain, parent=parent, diff_id=diff_ids[i], index=i,
                                             config=config)
                    except ImageNotFound:
                        if parent is None or self.graph.exists(parent):
                            raise
                        raise self._vanished(parent) from None
                    if stored:
                        added.append(chain)
                    self.graph.retain(session, chain)
                parent = chain
            new = NewImage(manifest=manifest_bytes, manifest_media_type=manifest_type, config=config_bytes,
                           created=str(config.get("created") or ""), index=index_bytes, layers=chains,
                           diff_ids=diff_ids, location=self.source.location)
            self._record(image_id, new, all_names, chains)
        except BaseException:
            self.graph.release(session, *chains)
            self._discard(added)
            raise
        self.graph.release(session, *chains)
        return image_id

    def _vanished(self, layer: str) -> ImageNotFound:
        return ImageNotFound(f"{self._what}: layer {layer[:12]}, which this load builds on, was removed meanwhile "
                             f"(by another command); nothing of the image was kept: run the command again")

    def _discard(self, added: list[str]) -> None:
        """Remove the layers this load added, top first, but none that a recorded image uses by now (a
        concurrent load that found them stored); under the image store's lock, which `_record` holds too."""
        if not added:
            return
        try:
            with self.records.locked():
                self._delete_unused(added)
            return
        except OSError:  # no lock to take: the store's first image, on a full or read-only filesystem,
            pass  # so no recorded image can use them
        self._delete_unused(added)

    def _delete_unused(self, added: list[str]) -> None:
        used: set[str] = set()
        with contextlib.suppress(LayerStoreError, OSError):
            used = {layer for image in self.records.read_all() for layer in image.layers}
        for layer in reversed(added):
            if layer in used:
                break  # it stays for that image, and so do the layers below it
            with contextlib.suppress(LayerStoreError, OSError):
                self.graph.delete(layer, force=True)

    def _stored_as(self, digest: str, platform: Platform | None) -> StoredImage | None:
        """The image stored under one of the source's names that loading the manifest or index `digest`
        would give (for an index: the entry `pick_platform` chooses), when all its layers are in the graph;
        else None.  Only those images are read: a store of many images pays nothing for the others."""
        names = self.records.names()
        for name in self.source.names():
            image_id = names.get(str(parse_reference(name)))
            try:
                image = self.records.read(image_id, names) if image_id is not None else None
            except LayerStoreError:  # removed meanwhile, or unreadable: load it
                image = None
            if image is None:
                continue
            if image.manifest_digest != digest:
                index = self.records.index(image.id) if image.index_digest == digest else None
                if index is None:
                    continue
                try:
                    if pick_platform(_parse_json(index, digest), platform, digest).digest != image.manifest_digest:
                        continue
                except LayerStoreError:
                    continue
            if all(self.graph.exists(layer) for layer in image.layers):
                return image
        return None

    def _reuse(self, image: StoredImage, names: list[str]) -> bool:
        """Do for the stored `image` what loading it again would (report its layers as reused, record the
        source's location and `names`) without reading the source; False when it went meanwhile."""
        try:
            _, layer_descs = self._descriptors(_parse_json(self.records.manifest(image.id), self._what))
        except (LayerStoreError, OSError):
            return False
        for desc, layer in zip(layer_descs, image.layers, strict=True):
            self.progress.blob_started(desc, reused=True)
            self._note_location(layer, desc)
            self.progress.blob_finished(desc)
        return self._record(image.id, None, names, image.layers)

    def _manifest(self, platform: Platform | None) -> tuple[bytes, str, bytes | None]:
        """The manifest to load, its media type, and the index it was picked from (None without one)."""
        top, top_type = self.source.top_manifest()
        if top_type in mt.INDEX_TYPES:
            chosen = pick_platform(_parse_json(top, f"{self._what}: index"), platform, self._what)
            manifest_bytes, manifest_type = self.source.manifest(chosen.digest)
            if sha256_of(manifest_bytes) != chosen.digest:
                raise DigestMismatch(f"{self._what}: manifest {chosen.digest} does not match its digest")
            return manifest_bytes, manifest_type, top
        if top_type in mt.MANIFEST_TYPES:
            return top, top_type, None
        raise UnsupportedMediaType(f"{self._what}: manifest media type {top_type!r} is not supported")

    def _descriptors(self, manifest: dict[str, Any]) -> tuple[Descriptor, list[Descriptor]]:
        """The manifest's config and layer descriptors, checked to be of types this version reads."""
        what = self._what
        if manifest.get("schemaVersion") != 2:
            raise UnsupportedMediaType(f"{what}: manifest schemaVersion {manifest.get('schemaVersion')!r} "
                                       "is not supported (only 2)")
        config_desc = _descriptor(manifest.get("config"), f"{what}: config")
        if config_desc.media_type not in mt.CONFIG_TYPES:
            raise UnsupportedMediaType(f"{what}: config media type {config_desc.media_type!r} is not an image config")
        layer_descs = [_descriptor(d, f"{what}: layers[{i}]") for i, d in enumerate(manifest.get("layers") or [])]
        for i, desc in enumerate(layer_descs):
            if mt.layer_compression(desc.media_type) is None:
                raise UnsupportedMediaType(
                    f"{what}: layer {i + 1} ({desc.digest}) has media type {desc.media_type!r}, "
                    "which is not a layer type this version reads"
                )
        return config_desc, layer_descs

    def _read_config(self, desc: Descriptor) -> bytes:
        what = self._what
        if desc.size > MAX_JSON_SIZE:
            raise InvalidArchive(f"{what}: config {desc.digest} is larger than {MAX_JSON_SIZE} bytes")
        with contextlib.closing(self.source.open_blob(desc)) as raw:
            reader = VerifyingReader(raw, desc.digest, desc.size, f"{what}: config {desc.digest}")
            data = reader.read(MAX_JSON_SIZE + 1)
            if len(data) > MAX_JSON_SIZE:
                raise InvalidArchive(f"{what}: config is larger than {MAX_JSON_SIZE} bytes; refusing to read it")
            reader.drain()
        return data

    def _apply(self, desc: Descriptor, *, chain: str, parent: str | None, diff_id: str, index: int,
               config: dict[str, Any]) -> bool:
        """Register layer `index` as graph image `chain`; True when this call stored it (not a concurrent one)."""
        label = f"{self._what}: layer {index + 1} ({desc.digest})"
        self.progress.blob_started(desc, reused=False)
        layer = Image(id=chain, parent=parent, created=format_created(),
                      architecture=str(config.get("architecture") or ""), os=str(config.get("os") or "linux"),
                      comment=f"layer {diff_id}")
        with contextlib.closing(self.source.open_blob(desc)) as raw:
            reader = VerifyingReader(raw, desc.digest, desc.size, label,
                                     lambda n: self.progress.blob_advanced(desc, n))

            def verify(actual: str) -> None:
                # Before the layer becomes visible under its chain ID: another load must never reuse a layer
                # whose blob or content is not what the image says.
                reader.drain()
                if actual != diff_id:
                    raise DigestMismatch(
                        f"{label}: uncompressed content is {actual}, but the config's diff_ids says {diff_id}"
                    )

            try:
                stored = self.graph.register(layer, cast(BinaryIO, reader), check=verify)
            except InvalidArchive as exc:
                # A damaged blob usually breaks the decompressor first: its digest is the clearer news.
                reader.drain()
                raise InvalidArchive(f"{label}: {exc}") from None
            try:
                reader.drain()  # a concurrent load stored the layer first: this blob is checked all the same
                add_layer_blob(self.graph, chain, LayerBlob.from_descriptor(desc, self.source.location))
            except BaseException:
                if stored:
                    self._discard([chain])
                raise
        self.progress.blob_finished(desc)
        return stored

    def _note_location(self, layer: str, desc: Descriptor) -> None:
        """Record that a reused layer's blob `desc` exists at the source's location too.

        Only for a blob digest already recorded with the layer: this blob was
        not read, so that its bytes are a form of this layer is known only
        from an earlier load that verified them.
        """
        location = self.source.location
        if location and any(b.digest == desc.digest for b in layer_blobs(self.graph, layer)):
            add_layer_blob(self.graph, layer, LayerBlob.from_descriptor(desc, location))

    def _record(self, image_id: str, image: NewImage | None, names: list[str], layers: Sequence[str]) -> bool:
        """Write the image's record (or, when it is stored already, only the source's location) and its names.

        Without `image` only an image stored already gets them; False when it is not (any more), or when one
        of its `layers` is gone.  Under the image store's lock every one of `layers` must exist (`_discard`
        and ``rmi`` delete layers under that lock): a record never names a layer another command removed.
        """
        location = self.source.location
        with self.records.locked():
            missing = next((layer for layer in layers if not self.graph.exists(layer)), None)
            if missing is not None:
                if image is None:
                    return False
                raise self._vanished(missing)
            if not self.records.exists(image_id):
                if image is None:
                    return False
                self.records.create(image_id, image)
            elif location:
                self.records.add_config_location(image_id, location)
            if names:
                self.records.add_names(names, image_id)
        return True
