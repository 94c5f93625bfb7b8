"""The done-when image on every driver: loads from skopeo's docker-archive and OCI layout, layer digests equal the
config's diff_ids, the mounted image equals `umoci unpack`, a saved archive loads again reusing every layer.

Runs in the integration environment (all four drivers installed); zfs needs the machine's zfs-fuse lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from images_helpers import NAME, TAG, skopeo_config, skopeo_inspect, snapshot, unpack

from layerstore import available_drivers, load_driver
from layerstore.errors import DriverNotSupported
from layerstore.graph import Graph
from layerstore.images import ImageStore
from layerstore.images.archives import open_destination, open_sources
from layerstore.testing import unavailable
from layerstore.testing.loop import loop_filesystem_or_unavailable
from layerstore.testing.zfsfuse import zfs_fuse_daemon, zfs_fuse_pool

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _backing(name: str, workdir: Path) -> Iterator[Path]:
    """A directory on the backend driver `name` needs (a loop btrfs, a zfs-fuse pool, else the workspace)."""
    if name == "btrfs":
        with loop_filesystem_or_unavailable("btrfs", workdir / "loop", "btrfs", 1024) as mnt:
            yield mnt
    elif name == "zfs":
        with zfs_fuse_daemon(workdir), zfs_fuse_pool(workdir, 1024) as (_pool, mountpoint):
            yield mountpoint
    else:
        yield workdir


@pytest.fixture(params=["vfs", "overlay", "btrfs", "zfs"])
def driver_store(request: pytest.FixtureRequest, scratch: Path) -> Iterator[ImageStore]:
    name = request.param
    if name not in available_drivers():
        unavailable(name, f"the layerstore-{name} distribution is not installed")
    with _backing(name, scratch / "backing") as base:
        root = base / "store"
        try:
            driver = load_driver(name, root / name)
        except DriverNotSupported as exc:
            unavailable(name, str(exc))
        store = ImageStore(Graph(root, driver))
        try:
            yield store
        finally:
            for image in store.images():
                store.remove(image.id)
            driver.cleanup()


def test_done_when_image_on_every_driver(driver_store: ImageStore, images: dict[str, Path], scratch: Path) -> None:
    store = driver_store
    expected_id = skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    diff_ids = skopeo_config(f"oci:{images['umoci']}:{TAG}")["rootfs"]["diff_ids"]
    for form in ("skopeo-docker", "skopeo-oci"):
        [source] = open_sources(images[form])
        try:
            image = store.load(source, names=[NAME])
        finally:
            source.close()
        assert image.digest == expected_id
        assert [store.graph.get_digest(layer) for layer in image.layers] == diff_ids
    assert len(store.graph.ids()) == 2
    assert [i.names for i in store.images()] == [(NAME,)]

    top = image.top_layer
    assert top is not None
    mounted = Path(store.graph.driver.get(top))
    try:
        assert snapshot(mounted) == snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    finally:
        store.graph.driver.put(top)

    saved = scratch / "saved.tar"
    store.save([NAME], open_destination(saved, "oci"))
    [source] = open_sources(saved)
    try:
        assert store.load(source).id == image.id
    finally:
        source.close()
    assert len(store.graph.ids()) == 2
