"""The two changes of an image store: registering an image and deleting one, each atomic.

``register`` builds everything in a staging directory ``_tmp/<id>.new.<random>``
and renames it into place, holding the image's lock all along; ``delete``
renames the image directory to ``_tmp/<id>.del.<random>`` before removing the
layer.  An image is visible when ``graph/<id>/json`` exists and the driver has
the layer, so a failure at any point leaves it whole or absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, BinaryIO, cast

from ..capabilities import CreateOpts
from ..errors import InvalidArchive, LayerStoreError, StorageFull
from ..fstree import remove_tree, remove_tree_quietly
from .files import (
    DIGEST_FILE,
    JSON_FILE,
    LAYERSIZE_FILE,
    SEAL_FILE,
    SPACE_ERRNOS,
    TAR_DATA_FILE,
    fsync_dir,
    write_staged,
)
from .seal import seal_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from ..drivers import Driver
    from ..image import Image
    from .files import ImageFiles

__all__ = ["delete_locked", "register_locked"]

_log = logging.getLogger("layerstore.graph")


def register_locked(
    files: ImageFiles,
    driver: Driver,
    image: Image,
    layer_data: BinaryIO | None,
    storage_opts: Mapping[str, str],
    check: Callable[[str], None] | None = None,
) -> None:
    """Store `image` and its layer; call with the image's lock held and its parent's shared.

    `check`, when given, is called with the layer's digest once the layer is
    written and before it becomes visible; what it raises discards it.  On
    any failure, interruption included, the driver layer and the staging
    directory are removed and the error re-raised (`StorageFull` for a full
    filesystem); nothing is visible.  Sets `image.size`.
    """
    image_id = image.id
    final = files.image_root(image_id)
    # The graph is the source of truth: leftovers of an image that is not
    # whole (another driver's metadata, an orphan layer) are cleared first.
    if final.exists():
        trash = files.make_staging(image_id, "del")
        os.rename(final, trash / "old")
        remove_tree_quietly(trash, _log.warning)
    if driver.exists(image_id):
        driver.remove(image_id, force=True)
    staging = files.make_staging(image_id, "new")
    try:
        driver.create(image_id, image.parent, CreateOpts(storage_opts=storage_opts))
        digest = None
        if layer_data is not None:
            image.size, digest = _apply_layer(driver, image, layer_data, staging)
            if check is not None:
                check(digest)
        else:
            image.size = 0
        # Written in place and synced as a batch: the staging directory becomes visible whole, by one rename.
        write_staged(staging / LAYERSIZE_FILE, str(image.size).encode())
        if digest is not None:
            write_staged(staging / DIGEST_FILE, digest.encode())
            write_staged(staging / SEAL_FILE, seal_text(staging / TAR_DATA_FILE, digest))
        write_staged(staging / JSON_FILE, image.to_json())
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(files.graph)
    except BaseException as exc:
        with contextlib.suppress(LayerStoreError, OSError):
            if driver.exists(image_id):
                driver.remove(image_id, force=True)
        remove_tree_quietly(staging, _log.warning)
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            raise StorageFull(
                f"no space left on {files.root} (its filesystem is full) while importing image {image_id}; "
                "free space and import again"
            ) from exc
        raise


def _apply_layer(driver: Driver, image: Image, layer_data: BinaryIO, staging: Path) -> tuple[int, str]:
    from ..archive.aside import setting_aside
    from ..archive.compression import decompressed, plain_file_span
    from ..tarsplit.recording import LayerRecording

    # Files the extraction removes again (a later whiteout of them in the same
    # tar) are kept aside, then moved into the tar-split metadata.
    with open(staging / TAR_DATA_FILE, "wb") as meta, setting_aside(staging / "aside") as aside:
        source_file = plain_file_span(layer_data)  # before the first read: where the plain tar starts
        plain = decompressed(layer_data)
        try:
            with contextlib.closing(LayerRecording(plain, meta, source_file=source_file)) as recording:
                try:
                    size = driver.apply_diff(image.id, image.parent, cast(BinaryIO, recording))
                except OverflowError as exc:  # e.g. a base-256 uid of 2^40 reaching chown
                    raise InvalidArchive(
                        f"layer of image {image.id} has a number out of range ({exc}): owner IDs must be "
                        "below 2^32; fix the tar"
                    ) from None
                # Everything after the end-of-archive blocks belongs to the
                # layer's bytes too: finish records and hashes it.
                digest = recording.finish()
        finally:
            if plain is not layer_data:  # decompressed() may hand back the caller's own stream
                plain.close()
        meta.flush()
        os.fsync(meta.fileno())
    if aside.kept:
        from ..tarsplit.inline import inline_kept

        inline_kept(staging / TAR_DATA_FILE, aside.kept)
        remove_tree(aside.directory)
    return size, digest


def delete_locked(files: ImageFiles, driver: Driver, image_id: str, *, driver_has: bool, force: bool = False) -> None:
    """Remove the metadata of `image_id` at once, then its layer; call with the image's lock held.

    If the layer cannot be removed, the metadata is put back: also when,
    without `force`, a `mount` took a reference after the caller checked
    (mounting does not take the image's lock; the driver facade orders the
    two on the layer).
    """
    # A plain rename, no new directory: deleting must work on a full filesystem.
    trash = files.trash_name(image_id)
    try:
        os.rename(files.image_root(image_id), trash)
    except OSError as exc:
        if exc.errno not in SPACE_ERRNOS:
            raise
        _delete_on_full_filesystem(files, driver, image_id, driver_has, trash, force)
    else:
        fsync_dir(files.graph)
        try:
            if driver_has:
                driver.remove(image_id, force=force)
        except BaseException:
            os.rename(trash, files.image_root(image_id))
            raise
        remove_tree_quietly(trash, _log.warning)
    files.drop_lock_file(image_id)


def _delete_on_full_filesystem(
    files: ImageFiles, driver: Driver, image_id: str, driver_has: bool, trash: Path, force: bool
) -> None:
    """Delete an image when even a rename needs space (copy-on-write filesystems: btrfs, zfs).

    The layer goes first, which frees space (a zfs destroy or btrfs
    subvolume delete works on a full filesystem); while it is gone and the
    metadata not yet, the image is not whole and so invisible.  If the
    layer cannot be removed, the image stays exactly as it was.
    """
    if driver_has:
        driver.remove(image_id, force=force)
    try:
        os.rename(files.image_root(image_id), trash)
    except OSError:
        remove_tree_quietly(files.image_root(image_id), _log.warning)
        return
    remove_tree_quietly(trash, _log.warning)
