"""The done-when pull on every driver: the image skopeo pushed to docker-registry pulls identical (layer digests,
mounted tree) to loading the same image from skopeo's archive, and a second pull transfers no blob.

Runs in the integration environment (all four drivers installed); zfs needs the machine's zfs-fuse lock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from images_helpers import TAG, skopeo_config, snapshot, unpack
from registry_fixtures import insecure, plain_registry, pushed
from test_images_drivers import driver_store

from layerstore.images import ImageStore
from layerstore.images.archives import open_sources
from layerstore.registry.transfer import pull

__all__ = ["driver_store", "plain_registry", "pushed"]  # fixtures used by name

pytestmark = pytest.mark.integration


def test_pull_on_every_driver(driver_store: ImageStore, pushed: str, images: dict[str, Path], scratch: Path) -> None:
    store = driver_store
    result = pull(store, pushed, options=insecure())
    image = result.image
    diff_ids = skopeo_config(f"oci:{images['umoci']}:{TAG}")["rootfs"]["diff_ids"]
    assert [store.graph.get_digest(layer) for layer in image.layers] == diff_ids
    top = image.top_layer
    assert top is not None
    mounted = Path(store.graph.driver.get(top))
    try:
        assert snapshot(mounted) == snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    finally:
        store.graph.driver.put(top)

    # The same image from skopeo's docker-archive is the same image: nothing new is stored.
    [source] = open_sources(images["skopeo-docker"])
    try:
        loaded = store.load(source)
    finally:
        source.close()
    assert (loaded.id, loaded.layers) == (image.id, image.layers)

    again = pull(store, pushed, options=insecure())
    assert (again.layers_fetched, again.bytes) == (0, 0)
    assert len(store.graph.ids()) == 2
