"""The image store: images (manifest + config + layer chain) and their names, on top of a `Graph`.

Layout under the store root, beside ``graph/``::

    <root>/images/<image-hex>/manifest      the manifest bytes, verbatim
    <root>/images/<image-hex>/config        the config bytes, verbatim
    <root>/images/<image-hex>/index         the index it was picked from (multi-platform images), verbatim
    <root>/images/<image-hex>/image.json    digests, media types, the layer chain, load time
    <root>/images/names.json                name -> image ID
    <root>/images/.lock                     flock of every change

The image ID is the config digest, as Docker and Podman have it.  Layers are
graph images whose ID is their chain ID (see `layerstore.images.layers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import attrs

from ..counting import CountingReader
from ..errors import (
    AmbiguousID,
    CorruptMetadata,
    DigestMismatch,
    ImageNotFound,
    InvalidArchive,
    LayerInUse,
    LayerStoreError,
    UnsupportedMediaType,
)
from ..image import Image, format_created, is_valid_id
from . import descriptor as mt
from ._streams import CompressingReader, VerifyingReader, sha256_of
from .descriptor import Descriptor, Platform
from .layers import LayerBlob, add_layer_blob, chain_ids, layer_blobs
from .reference import is_digest, parse_reference
from .transport import ImageDestination, ImageSource, TransferProgress

if TYPE_CHECKING:
    from ..graph import Graph

__all__ = ["ImageStore", "StoredImage"]

IMAGES_DIR = "images"
NAMES_FILE = "names.json"
_MAX_JSON = 4 << 20  # manifests and configs larger than this are refused, not read into memory
_COMPRESSED_TYPES = {
    "none": (mt.OCI_LAYER, mt.DOCKER_LAYER_TAR),
    "gzip": (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP),
    "zstd": (mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_ZSTD),
}


@attrs.frozen(kw_only=True)
class StoredImage:
    """An image in the store: its ID (the config digest), names, manifest, config and layer chain.

    `layers` are the graph IDs (chain IDs without ``sha256:``) from the
    bottom up, `diff_ids` the config's uncompressed layer digests.
    `config_locations` are the places (``registry/repository``) where the
    config blob is known to exist: where it was pulled from or pushed to.
    """

    id: str
    names: tuple[str, ...]
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...]
    created: str
    loaded: str
    index_digest: str | None = None
    config_locations: tuple[str, ...] = ()

    @property
    def top_layer(self) -> str | None:
        """The graph ID of the top layer (None for an image without layers)."""
        return self.layers[-1] if self.layers else None

    @property
    def digest(self) -> str:
        """The image ID as a digest (``sha256:<id>``)."""
        return "sha256:" + self.id


def _read_limited(stream: BinaryIO, what: str) -> bytes:
    data = stream.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise InvalidArchive(f"{what} is larger than {_MAX_JSON} bytes; refusing to read it")
    return data


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


class ImageStore:
    """Images and names on top of `graph`; loads from an `ImageSource`, saves to an `ImageDestination`.

    Safe across processes: every change holds ``images/.lock``.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.root = graph.root / IMAGES_DIR
        # Created by the first change: reading a store never writes to it.
        if self.root.is_dir():
            self._sweep()

    # -- records ----------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        """Remove staging and trash of killed processes (under the lock, so never a live one's)."""
        leftovers = list(self.root.glob(".tmp-*"))
        if leftovers:
            with self._lock():
                for entry in leftovers:
                    shutil.rmtree(entry, ignore_errors=True)

    def _names(self) -> dict[str, str]:
        path = self.root / NAMES_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise CorruptMetadata(f"{path}: cannot read the image names ({exc})") from None
        return {str(k): str(v) for k, v in data.items()}

    def _write_names(self, names: dict[str, str]) -> None:
        path = self.root / NAMES_FILE
        tmp = path.with_name(f".{NAMES_FILE}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(dict(sorted(names.items())), indent=1))
        os.replace(tmp, path)

    def _ids(self) -> list[str]:
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in entries if is_valid_id(n) and (self.root / n / "image.json").is_file())

    def _record(self, image_id: str, names: dict[str, str] | None = None) -> StoredImage:
        path = self.root / image_id / "image.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"no image {image_id}; `layerstore images` lists the images") from None
        except ValueError as exc:
            raise CorruptMetadata(f"{path}: cannot read the image record ({exc})") from None
        names = self._names() if names is None else names
        return StoredImage(
            id=image_id,
            names=tuple(sorted(n for n, i in names.items() if i == image_id)),
            manifest_digest=data["manifest_digest"],
            manifest_media_type=data["manifest_media_type"],
            config_digest=data["config_digest"],
            layers=tuple(data["layers"]),
            diff_ids=tuple(data["diff_ids"]),
            created=data.get("created") or "",
            loaded=data.get("loaded") or "",
            index_digest=data.get("index_digest"),
            config_locations=tuple(data.get("config_locations") or ()),
        )

    def images(self) -> list[StoredImage]:
        """Every stored image, sorted by ID."""
        names = self._names()
        return [self._record(i, names) for i in self._ids()]

    def resolve(self, name: str) -> str:
        """The image ID named by `name`: a name (``alpine``, ``repo:tag``, ``repo@sha256:…``), an image ID or
        a unique prefix of one, ``sha256:<id>``, or the manifest digest.  `ImageNotFound`, `AmbiguousID`."""
        ids = self._ids()
        text = name[len("sha256:"):] if name.startswith("sha256:") and is_digest(name) else name
        if text in ids:
            return text
        if is_digest(name):
            for image in self.images():
                if name in (image.manifest_digest, image.index_digest):
                    return image.id
        names = self._names()
        with contextlib.suppress(LayerStoreError):
            ref = parse_reference(name)
            if str(ref) in names:
                return names[str(ref)]
            if ref.digest is not None:
                for image in self.images():
                    if ref.digest in (image.manifest_digest, image.index_digest, image.digest) and any(
                            n.startswith((ref.name + ":", ref.name + "@")) for n in image.names):
                        return image.id
        if text and all(c in "0123456789abcdef" for c in text):
            matches = [i for i in ids if i.startswith(text)]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise AmbiguousID(f"{name!r} matches several images: {', '.join(m[:12] for m in matches)}")
        raise ImageNotFound(f"no image named {name!r}; `layerstore images` lists the images")

    def get(self, name: str) -> StoredImage:
        """The image named by `name` (see `resolve`)."""
        return self._record(self.resolve(name))

    def manifest(self, name: str) -> bytes:
        """The image's manifest bytes as loaded."""
        return (self.root / self.resolve(name) / "manifest").read_bytes()

    def config(self, name: str) -> bytes:
        """The image's config bytes as loaded."""
        return (self.root / self.resolve(name) / "config").read_bytes()

    def config_json(self, name: str) -> dict[str, Any]:
        """The image's config, parsed."""
        return cast(dict[str, Any], json.loads(self.config(name)))

    # -- names --------------------------------------------------------------------

    def tag(self, name: str, new_name: str) -> str:
        """Give the image named `name` the additional name `new_name` (moved from another image if it had it).

        Returns the normalised new name.
        """
        image_id = self.resolve(name)
        ref = str(parse_reference(new_name))
        with self._lock():
            names = self._names()
            names[ref] = image_id
            self._write_names(names)
        return ref

    def untag(self, name: str) -> str:
        """Remove one name (the image stays); returns the normalised name."""
        ref = str(parse_reference(name))
        with self._lock():
            names = self._names()
            if ref not in names:
                raise ImageNotFound(f"no image is named {ref}; `layerstore images` lists the names")
            del names[ref]
            self._write_names(names)
        return ref

    # -- removal ------------------------------------------------------------------

    def remove(self, name: str) -> list[str]:
        """Remove the image (all its names) and every layer of it that no other image or child layer uses.

        Refuses (`LayerInUse`) when one of those layers is mounted or held.
        Returns the IDs of the layers removed, top first.
        """
        with self._lock():
            image = self._record(self.resolve(name))
            others = {layer for other in self.images() if other.id != image.id for layer in other.layers}
            doomed: list[str] = []
            for layer in reversed(image.layers):
                if layer in others or not self.graph.exists(layer):
                    break
                children = set(self.graph.children(layer)) - set(doomed)
                if children:
                    break
                if self.graph.is_held(layer) or self.graph.driver.references(layer):
                    raise LayerInUse(
                        f"image {image.id[:12]}: layer {layer[:12]} is mounted or held; "
                        f"unmount it (`layerstore umount {layer[:12]}`) first"
                    )
                doomed.append(layer)
            names = self._names()
            self._write_names({n: i for n, i in names.items() if i != image.id})
            trash = self.root / f".tmp-{secrets.token_hex(6)}"
            os.rename(self.root / image.id, trash)
            shutil.rmtree(trash, ignore_errors=True)
            for layer in doomed:
                self.graph.delete(layer)
        return doomed

    # -- load ---------------------------------------------------------------------

    def load(
        self,
        source: ImageSource,
        *,
        names: Sequence[str] = (),
        platform: Platform | None = None,
        progress: TransferProgress | None = None,
    ) -> StoredImage:
        """Load one image from `source` and return it as stored.

        Reads the top manifest; from an index, picks `platform` (default:
        this machine's) and keeps the index.  Every blob is checked against
        its descriptor's digest and size; each layer's uncompressed digest
        must equal the config's ``diff_ids`` entry.  Layers whose chain ID is
        stored are reused and not read; after the config has been read,
        `source.prefetch` is told exactly the layer blobs that will be opened,
        in order, and they are opened one at a time in that order.  Layers are decompressed (gzip, zstd) and
        applied as streams through the graph, with tar-split recording; each records its blob digest and
        the source's `location` (for a reused layer: the location only, of a blob digest recorded before).  The
        image gets `names` plus the names the source carries.  Atomic: on any
        error the layers this call added are removed and no record stays.
        Loading an image that is stored already only adds the names.
        """
        progress = progress or TransferProgress()
        top, top_type = source.top_manifest()
        what = source.description
        index_bytes: bytes | None = None
        if top_type in mt.INDEX_TYPES:
            index_bytes = top
            chosen = pick_platform(_parse_json(top, f"{what}: index"), platform, what)
            manifest_bytes, manifest_type = source.manifest(chosen.digest)
            if sha256_of(manifest_bytes) != chosen.digest:
                raise DigestMismatch(f"{what}: manifest {chosen.digest} does not match its digest")
        elif top_type in mt.MANIFEST_TYPES:
            manifest_bytes, manifest_type = top, top_type
        else:
            raise UnsupportedMediaType(f"{what}: manifest media type {top_type!r} is not supported")
        manifest = _parse_json(manifest_bytes, f"{what}: manifest")
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
        config_bytes = self._read_config(source, config_desc, what)
        config = _parse_json(config_bytes, f"{what}: config {config_desc.digest}")
        diff_ids = self._diff_ids(config, len(layer_descs), what)
        chains = [c.partition(":")[2] for c in chain_ids(diff_ids)]
        image_id = config_desc.digest.partition(":")[2]
        all_names = [str(parse_reference(n)) for n in (*names, *source.names())]

        session = "load-" + uuid.uuid4().hex
        present = [self.graph.exists(c) for c in chains]
        self.graph.retain(session, *(c for c, p in zip(chains, present, strict=True) if p))
        added: list[str] = []
        try:
            source.prefetch([d for d, p in zip(layer_descs, present, strict=True) if not p])
            parent: str | None = None
            for i, (desc, chain, have) in enumerate(zip(layer_descs, chains, present, strict=True)):
                if have:
                    progress.blob_started(desc, reused=True)
                    self._note_location(chain, desc, source.location)
                    progress.blob_finished(desc)
                else:
                    if self._apply(source, desc, chain=chain, parent=parent, diff_id=diff_ids[i], index=i,
                                   config=config, progress=progress, what=what):
                        added.append(chain)
                    self.graph.retain(session, chain)
                parent = chain
            self._store_record(image_id, manifest_bytes=manifest_bytes, manifest_type=manifest_type,
                               config_bytes=config_bytes, config=config, index_bytes=index_bytes,
                               chains=chains, diff_ids=diff_ids, names=all_names, location=source.location)
        except BaseException:
            self.graph.release(session, *chains)
            for layer in reversed(added):
                with contextlib.suppress(LayerStoreError, OSError):
                    self.graph.delete(layer, force=True)
            raise
        self.graph.release(session, *chains)
        return self._record(image_id)

    def _read_config(self, source: ImageSource, desc: Descriptor, what: str) -> bytes:
        if desc.size > _MAX_JSON:
            raise InvalidArchive(f"{what}: config {desc.digest} is larger than {_MAX_JSON} bytes")
        with contextlib.closing(source.open_blob(desc)) as raw:
            reader = VerifyingReader(raw, desc.digest, desc.size, f"{what}: config {desc.digest}")
            data = _read_limited(cast(BinaryIO, reader), f"{what}: config")
            reader.drain()
        return data

    @staticmethod
    def _diff_ids(config: dict[str, Any], count: int, what: str) -> list[str]:
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
            raise InvalidArchive(f"{what}: the config has no valid rootfs.diff_ids")
        if len(diff_ids) != count:
            raise InvalidArchive(
                f"{what}: the config lists {len(diff_ids)} diff_ids but the manifest {count} layers"
            )
        return diff_ids

    def _apply(self, source: ImageSource, desc: Descriptor, *, chain: str, parent: str | None, diff_id: str,
               index: int, config: dict[str, Any], progress: TransferProgress, what: str) -> bool:
        label = f"{what}: layer {index + 1} ({desc.digest})"
        progress.blob_started(desc, reused=False)
        layer = Image(id=chain, parent=parent, created=format_created(),
                      architecture=str(config.get("architecture") or ""), os=str(config.get("os") or "linux"),
                      comment=f"layer {diff_id}")
        with contextlib.closing(source.open_blob(desc)) as raw:
            reader = VerifyingReader(raw, desc.digest, desc.size, label,
                                     lambda n: progress.blob_advanced(desc, n))
            try:
                stored = self.graph.register(layer, cast(BinaryIO, reader))
            except InvalidArchive as exc:
                # A damaged blob usually breaks the decompressor first: its digest is the clearer news.
                reader.drain()
                raise InvalidArchive(f"{label}: {exc}") from None
            try:
                reader.drain()
                if stored:
                    actual = self.graph.get_digest(chain)
                    if actual != diff_id:
                        raise DigestMismatch(
                            f"{label}: uncompressed content is {actual}, but the config's diff_ids says {diff_id}"
                        )
            except BaseException:
                if stored:
                    with contextlib.suppress(LayerStoreError, OSError):
                        self.graph.delete(chain, force=True)
                raise
        location = source.location
        add_layer_blob(self.graph, chain, LayerBlob(digest=desc.digest, size=desc.size, media_type=desc.media_type,
                                                    locations=(location,) if location else ()))
        progress.blob_finished(desc)
        return stored

    def _note_location(self, layer: str, desc: Descriptor, location: str | None) -> None:
        """Record that a reused layer's blob `desc` exists at `location` too.

        Only for a blob digest already recorded with the layer: this blob was
        not read, so that its bytes are a form of this layer is known only
        from an earlier load that verified them.
        """
        if location and any(b.digest == desc.digest for b in layer_blobs(self.graph, layer)):
            add_layer_blob(self.graph, layer, LayerBlob(digest=desc.digest, size=desc.size,
                                                        media_type=desc.media_type, locations=(location,)))

    def _store_record(self, image_id: str, *, manifest_bytes: bytes, manifest_type: str, config_bytes: bytes,
                      config: dict[str, Any], index_bytes: bytes | None, chains: list[str],
                      diff_ids: list[str], names: list[str], location: str | None) -> None:
        with self._lock():
            final = self.root / image_id
            if (final / "image.json").is_file():
                if location:
                    self._add_config_location(image_id, location)
            else:
                staging = self.root / f".tmp-{secrets.token_hex(6)}"
                staging.mkdir()
                try:
                    (staging / "manifest").write_bytes(manifest_bytes)
                    (staging / "config").write_bytes(config_bytes)
                    if index_bytes is not None:
                        (staging / "index").write_bytes(index_bytes)
                    record = {
                        "manifest_digest": sha256_of(manifest_bytes),
                        "manifest_media_type": manifest_type,
                        "config_digest": "sha256:" + image_id,
                        "index_digest": sha256_of(index_bytes) if index_bytes is not None else None,
                        "layers": chains,
                        "diff_ids": diff_ids,
                        "created": str(config.get("created") or ""),
                        "loaded": format_created(),
                        "config_locations": [location] if location else [],
                    }
                    (staging / "image.json").write_text(json.dumps(record, indent=1))
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(staging, final)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            if names:
                current = self._names()
                current.update(dict.fromkeys(names, image_id))
                self._write_names(current)

    def _add_config_location(self, image_id: str, location: str) -> None:
        """Record (under the lock) that the image's config blob exists at `location` too; nothing for an image
        without a record (a layer chain made by ``import``)."""
        path = self.root / image_id / "image.json"
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # an unreadable record is reported by whoever reads it; a location is only a hint
        locations = list(record.get("config_locations") or [])
        if location in locations:
            return
        record["config_locations"] = [*locations, location]
        tmp = path.with_name(f".image.json.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    # -- save ---------------------------------------------------------------------

    def save(
        self,
        names_or_ids: Sequence[str],
        destination: ImageDestination,
        *,
        compress: str = "none",
        progress: TransferProgress | None = None,
    ) -> list[str]:
        """Write the named images to `destination` and commit it; returns the manifest digests, in order.

        Config bytes are written verbatim (the image ID stays the same) and
        layers are the bytes that were loaded (rebuilt with tar-split),
        compressed on the fly with `compress` (``none``, ``gzip``, ``zstd``).
        For each blob the destination is asked first (`has_blob`, with the
        locations where it is recorded as `mount_from`); only missing blobs are
        written, and each layer blob and the config are recorded with the
        destination's `location`, so a second save there writes no layer.  An
        image whose stored manifest already describes exactly these blobs is
        written with its manifest verbatim (same manifest digest).  On error
        the destination is closed without commit.
        """
        if compress not in _COMPRESSED_TYPES:
            raise ValueError(f"compress must be none, gzip or zstd, not {compress!r}")
        progress = progress or TransferProgress()
        digests = []
        try:
            images = [(n, *self._saveable(n)) for n in names_or_ids]
            for name, image, config_bytes, manifest in images:
                digests.append(self._save_one(name, image, config_bytes, manifest, destination=destination,
                                              compress=compress, progress=progress))
            destination.commit()
        finally:
            destination.close()
        return digests

    def _saveable(self, name: str) -> tuple[StoredImage, bytes, bytes | None]:
        """The image, config and stored manifest to save for `name`: a stored image, or else a layer made by
        ``import`` with a minimal config built from the v1 JSON of its chain (and no stored manifest)."""
        try:
            image = self.get(name)
        except ImageNotFound:
            try:
                layer = self.graph.resolve(name)
            except LayerStoreError:
                raise ImageNotFound(f"no image or layer named {name!r}; `layerstore images` lists the images") \
                    from None
            return self._layer_chain_image(layer)
        return image, (self.root / image.id / "config").read_bytes(), (self.root / image.id / "manifest").read_bytes()

    def _layer_chain_image(self, top: str) -> tuple[StoredImage, bytes, None]:
        chain = []
        current: str | None = top
        while current is not None:
            chain.append(self.graph.get(current))
            current = chain[-1].parent
        chain.reverse()
        diff_ids = [self.graph.get_digest(layer.id) for layer in chain]
        newest = chain[-1]
        config: dict[str, Any] = {
            "architecture": newest.architecture or "amd64",
            "os": newest.os or "linux",
            "created": newest.created,
            "config": newest.config or {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": layer.created, **({"comment": layer.comment} if layer.comment else {})}
                        for layer in chain],
        }
        data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        digest = sha256_of(data)
        image = StoredImage(id=digest.partition(":")[2], names=(), manifest_digest=digest,
                            manifest_media_type="", config_digest=digest, layers=tuple(x.id for x in chain),
                            diff_ids=tuple(diff_ids), created=newest.created, loaded="")
        return image, data, None

    def _save_one(self, name: str, image: StoredImage, config_bytes: bytes, stored: bytes | None, *,
                  destination: ImageDestination, compress: str, progress: TransferProgress) -> str:
        supported = destination.supported_manifest_types()
        oci = supported[0] == mt.OCI_MANIFEST if supported else True
        manifest_type = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
        layer_type = _COMPRESSED_TYPES[compress][0 if oci else 1]
        config_desc = Descriptor(media_type=mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                                 digest=image.config_digest, size=len(config_bytes))
        layers = [self._save_layer(layer, diff_id, layer_type=layer_type, compress=compress,
                                   destination=destination, progress=progress)
                  for layer, diff_id in zip(image.layers, image.diff_ids, strict=True)]
        if not destination.has_blob(config_desc, mount_from=image.config_locations):
            destination.put_blob(io.BytesIO(config_bytes), config_desc.media_type, expected=config_desc)
        if destination.location:
            with self._lock():
                self._add_config_location(image.id, destination.location)
        stored_json = json.loads(stored) if stored is not None else {}
        if (stored is not None and image.manifest_media_type == manifest_type
                and [d.get("digest") for d in stored_json.get("layers", [])] == [d.digest for d in layers]
                and stored_json.get("config", {}).get("mediaType") == config_desc.media_type):
            manifest = stored
        else:
            body: dict[str, Any] = {"schemaVersion": 2, "mediaType": manifest_type,
                                    "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]}
            manifest = json.dumps(body, indent=2).encode()
        names = list(image.names)
        with contextlib.suppress(LayerStoreError):
            ref = str(parse_reference(name))
            if ref in image.names:
                names = [ref]
        return destination.put_manifest(manifest, manifest_type, names=names)

    def _save_layer(self, layer: str, diff_id: str, *, layer_type: str, compress: str,
                    destination: ImageDestination, progress: TransferProgress) -> Descriptor:
        known = [b for b in layer_blobs(self.graph, layer)
                 if mt.layer_compression(b.media_type) == compress and (compress != "none" or b.digest == diff_id)]
        for blob in known:
            desc = Descriptor(media_type=layer_type, digest=blob.digest, size=blob.size)
            if destination.has_blob(desc, mount_from=blob.locations):
                progress.blob_started(desc, reused=True)
                progress.blob_finished(desc)
                self._remember(layer, desc, destination)
                return desc
        expected = None
        if compress == "none":
            size = known[0].size if known else self._tar_size(layer)
            expected = Descriptor(media_type=layer_type, digest=diff_id, size=size)
        placeholder = expected or Descriptor(media_type=layer_type, digest=diff_id, size=0)
        progress.blob_started(placeholder, reused=False)

        with contextlib.closing(self.graph.tar_layer(layer)) as tar:
            stream: BinaryIO = tar
            if compress != "none":
                stream = cast(BinaryIO, CompressingReader(tar, compress))
            counted = CountingReader(stream, lambda n: progress.blob_advanced(placeholder, n))
            desc = destination.put_blob(cast(BinaryIO, counted), layer_type, expected=expected)
        progress.blob_finished(desc)
        self._remember(layer, desc, destination)
        return attrs.evolve(desc, media_type=layer_type)

    def _remember(self, layer: str, desc: Descriptor, destination: ImageDestination) -> None:
        location = destination.location
        add_layer_blob(self.graph, layer, LayerBlob(digest=desc.digest, size=desc.size, media_type=desc.media_type,
                                                    locations=(location,) if location else ()))

    def _tar_size(self, layer: str) -> int:
        size = 0
        with contextlib.closing(self.graph.tar_layer(layer)) as tar:
            while chunk := tar.read(1 << 20):
                size += len(chunk)
        return size
