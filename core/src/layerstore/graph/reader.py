"""`ImageReader`: the read side of the image store: resolving names, loading images, walking the graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ImageNotFound, LayerStoreError
from ..image import Image, is_valid_id
from ..truncindex import TruncIndex

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from ..drivers import Driver
    from .files import ImageFiles

__all__ = ["ImageReader"]


class ImageReader:
    """Reads the images of `files` whose layers `driver` has; `Graph` adds the changes on top."""

    def __init__(self, files: ImageFiles, driver: Driver) -> None:
        self.files = files
        self.driver = driver

    def image_root(self, image_id: str) -> Path:
        """The metadata directory of `image_id` (``<root>/graph/<id>``)."""
        return self.files.image_root(image_id)

    def _is_whole(self, image_id: str) -> bool:
        return self.files.has_metadata(image_id) and self.driver.exists(image_id)

    def ids(self) -> list[str]:
        """The IDs of every whole image, sorted."""
        return [i for i in self.files.metadata_ids() if self.driver.exists(i)]

    def resolve(self, name: str) -> str:
        """Return the full ID of the image named by `name` (an ID, a unique prefix, or a ``sha256:`` digest).

        A digest names a layer by its chain ID, its diff digest or a recorded
        compressed digest (`layerstore.images.layers.resolve_digest`).
        `InvalidID` for an empty name or one with spaces, `ImageNotFound`,
        `AmbiguousID` naming the candidates.
        """
        if name.startswith("sha256:"):
            from ..images.layers import resolve_digest

            return resolve_digest(self, name)
        if is_valid_id(name):
            if self._is_whole(name):
                return name
            raise ImageNotFound(f"no image with ID {name}; `layerstore ls` lists the images")
        return TruncIndex(self.ids()).get(name)

    def exists(self, name: str) -> bool:
        """True if `name` (an ID or unique prefix) names a whole image: metadata and driver layer."""
        try:
            self.resolve(name)
        except LayerStoreError:
            return False
        return True

    def get(self, name: str) -> Image:
        """Return the image named by `name` (an ID or a unique prefix).

        The layer size is recomputed with the driver's ``diff_size`` (and
        saved) when the ``layersize`` file is missing.
        """
        return self._load(self.resolve(name))

    def _load(self, image_id: str) -> Image:
        image, size = self.files.load(image_id)
        if size is None:
            size = self.driver.diff_size(image_id, image.parent)
            self.files.save_size(image_id, size)
        image.size = size
        return image

    def raw_json(self, name: str) -> bytes:
        """The image's JSON exactly as stored."""
        return self.files.read_json(self.resolve(name))

    def walk_all(self, handler: Callable[[Image], object] | None = None) -> list[Image]:
        """Call `handler` on every image (images whose metadata cannot be read are skipped); return them."""
        images = []
        for image_id in self.ids():
            try:
                image = self._load(image_id)
            except LayerStoreError:
                continue
            images.append(image)
            if handler is not None:
                handler(image)
        return images

    def __iter__(self) -> Iterator[Image]:
        return iter(self.walk_all())

    def map(self) -> dict[str, Image]:
        """Every image, by ID."""
        return {image.id: image for image in self.walk_all()}

    def by_parent(self) -> dict[str, list[Image]]:
        """Images by the ID of their parent; an image without children has no entry."""
        images = self.map()
        result: dict[str, list[Image]] = {}
        for image in images.values():
            if image.parent and image.parent in images:
                result.setdefault(image.parent, []).append(image)
        return result

    def heads(self) -> dict[str, Image]:
        """Images that are no other image's parent, by ID."""
        images = self.map()
        parents = {image.parent for image in images.values() if image.parent}
        return {image_id: image for image_id, image in images.items() if image_id not in parents}

    def children(self, name: str | Image) -> list[str]:
        """The IDs of the images whose parent is the given image, sorted."""
        image_id = name.id if isinstance(name, Image) else self.resolve(name)
        return self._children_of(image_id)

    def _children_of(self, image_id: str) -> list[str]:
        found = []
        for child in self.files.metadata_ids():
            try:
                image = Image.from_json(self.files.read_json(child))
            except (LayerStoreError, OSError):
                continue
            if image.parent == image_id:
                found.append(child)
        return found

    def has_children(self, image: str | Image) -> bool:
        """True when another image has `image` as its parent."""
        return bool(self.children(image))
