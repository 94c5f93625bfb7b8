"""The image store: images (manifest + config + layer chain) and their names, on top of a `Graph`.

`ImageStore` is the entry point: lookup by name, ID or digest, tagging,
removal, and `load` / `save` through the transports of
`layerstore.images.transport`.  Its parts, each a module: the files on disk
(`records`), loading (`load`), saving (`save`).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, cast

from ..errors import AmbiguousID, ImageNotFound, LayerInUse, LayerStoreError
from .load import ImageLoader
from .records import IMAGES_DIR, NAMES_FILE, ImageRecords, StoredImage
from .reference import is_digest, parse_reference
from .save import ImageSaver, layer_chain_image
from .transport import TransferProgress

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..graph import Graph
    from .descriptor import Platform
    from .transport import ImageDestination, ImageSource

__all__ = ["IMAGES_DIR", "NAMES_FILE", "ImageStore", "StoredImage"]


class ImageStore:
    """Images and names on top of `graph`; loads from an `ImageSource`, saves to an `ImageDestination`.

    Safe across processes: every change holds ``images/.lock``.  `root` is
    ``<store>/images`` and `records` its files (`ImageRecords`).
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.root = graph.root / IMAGES_DIR
        self.records = ImageRecords(self.root)
        # Created by the first change: reading a store never writes to it.
        self.records.sweep()

    # -- lookup -------------------------------------------------------------------

    def images(self) -> list[StoredImage]:
        """Every stored image, sorted by ID."""
        return self.records.read_all()

    def resolve(self, name: str) -> str:
        """The image ID named by `name`: a name (``alpine``, ``repo:tag``, ``repo@sha256:…``), an image ID or
        a unique prefix of one, ``sha256:<id>``, or the manifest digest.  `ImageNotFound`, `AmbiguousID`."""
        ids = self.records.ids()
        text = name[len("sha256:"):] if name.startswith("sha256:") and is_digest(name) else name
        if text in ids:
            return text
        if is_digest(name):
            for image in self.images():
                if name in (image.manifest_digest, image.index_digest):
                    return image.id
        names = self.records.names()
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
        return self.records.read(self.resolve(name))

    def manifest(self, name: str) -> bytes:
        """The image's manifest bytes as loaded."""
        return self.records.manifest(self.resolve(name))

    def config(self, name: str) -> bytes:
        """The image's config bytes as loaded."""
        return self.records.config(self.resolve(name))

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
        with self.records.locked():
            if not self.records.exists(image_id):  # removed since it was resolved
                raise ImageNotFound(f"no image {image_id}; `layerstore images` lists the images")
            self.records.add_names([ref], image_id)
        return ref

    def untag(self, name: str) -> str:
        """Remove one name (the image stays); returns the normalised name."""
        ref = str(parse_reference(name))
        with self.records.locked():
            names = self.records.names()
            if ref not in names:
                raise ImageNotFound(f"no image is named {ref}; `layerstore images` lists the names")
            del names[ref]
            self.records.write_names(names)
        return ref

    # -- removal ------------------------------------------------------------------

    def remove(self, name: str) -> list[str]:
        """Remove the image (all its names) and every layer of it that no other image or child layer uses.

        Refuses (`LayerInUse`) when one of those layers is mounted or held.
        A layer on which a concurrent load has built a layer of its own by the
        time it is deleted stays, with those below it.  Returns the IDs of the
        layers removed, top first.
        """
        with self.records.locked():
            image = self.records.read(self.resolve(name))
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
            names_written = self.records.delete(image.id)
            removed: list[str] = []
            for layer in doomed:
                try:
                    self.graph.delete(layer)
                except LayerInUse:
                    if not self.graph.children(layer):
                        raise
                    # A pull or load in progress has just built a layer on this one (its image is not
                    # recorded yet): this layer and those below it stay, for that image.
                    break
                removed.append(layer)
            if not names_written:  # the filesystem was full: the layers freed space for the names file now
                with contextlib.suppress(OSError):
                    self.records.write_names(self.records.names())
        return removed

    # -- load and save ------------------------------------------------------------

    def load(
        self,
        source: ImageSource,
        *,
        names: Sequence[str] = (),
        platform: Platform | None = None,
        progress: TransferProgress | None = None,
        digest: str | None = None,
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
        Loading an image that is stored already only adds the names.  With
        `digest`, the digest the source's top manifest or index is known to
        have (a registry's answer to a ``HEAD``), an image stored under one of
        the source's names and made from it (for an index: the one picked for
        `platform`) is recognised before anything is read from the source.
        """
        loader = ImageLoader(self.graph, self.records, source, progress or TransferProgress())
        return self.records.read(loader.load(names=names, platform=platform, digest=digest))

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
        written with its manifest verbatim (same manifest digest).  A name
        that is no image but a layer made by ``import`` is saved with a
        config built from the v1 JSON of its chain.  On error the destination
        is closed without commit.
        """
        saver = ImageSaver(self.graph, self.records, destination, compress=compress,
                           progress=progress or TransferProgress())
        try:
            chosen = [(name, *self._saveable(name)) for name in names_or_ids]
            digests = [saver.save(name, image, config, manifest) for name, image, config, manifest in chosen]
            destination.commit()
        finally:
            destination.close()
        return digests

    def _saveable(self, name: str) -> tuple[StoredImage, bytes, bytes | None]:
        """The image, config and stored manifest to save for `name`: a stored image, or else a layer made by
        ``import`` (see `layer_chain_image`; no stored manifest)."""
        try:
            image = self.get(name)
        except ImageNotFound:
            try:
                layer = self.graph.resolve(name)
            except LayerStoreError:
                raise ImageNotFound(f"no image or layer named {name!r}; `layerstore images` lists the images") \
                    from None
            return *layer_chain_image(self.graph, layer), None
        return image, self.records.config(image.id), self.records.manifest(image.id)
