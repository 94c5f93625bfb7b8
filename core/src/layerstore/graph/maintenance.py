"""Maintenance of an image store: verifying every layer (`check`) and collecting leftovers (`gc`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs

from ..errors import CorruptMetadata, DigestMismatch, InvalidArchive, LayerInUse, LayerNotFound, LayerStoreError
from ..image import is_valid_id
from ..kit.atomic import sweep_atomic_temporaries
from ..tarsplit.layerstream import open_layer
from .files import SPACE_ERRNOS, TAR_DATA_FILE
from .staging import sweep_locks, sweep_staging

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..drivers import Driver
    from .files import ImageFiles

__all__ = ["CheckResult", "GCReport", "check_layer", "collect_garbage"]

_CHUNK = 1 << 20


@attrs.frozen
class CheckResult:
    """The outcome of verifying one layer (`Graph.check`)."""

    id: str
    ok: bool
    message: str
    expected: str | None = None
    actual: str | None = None
    unverified: bool = False
    """True when the layer could not be read (no space, I/O error, a mount failed): not known to be corrupt."""


@attrs.frozen
class GCReport:
    """What `Graph.gc` removed: orphan driver layers, leftover staging entries, references of dead processes,
    the driver's own leftovers and stale lock files."""

    layers: tuple[str, ...] = ()
    staging: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    """IDs of the images whose mount references held by dead processes were released."""
    driver: tuple[str, ...] = ()
    """What the driver's own ``gc`` hook collected (staging, trash, leaked snapshots, layers cut short)."""
    locks: tuple[str, ...] = ()
    """Lock files of images that no longer exist (left by killed processes or older versions)."""


def check_layer(
    files: ImageFiles, driver: Driver, image_id: str, progress: Callable[[int], object] | None
) -> CheckResult:
    """Reassemble the layer of `image_id` and compare its sha256 with the recorded digest."""
    try:
        files.load(image_id)
        expected = files.digest(image_id, required=False)
        if not files.has_tar_data(image_id):
            if expected is None:
                return CheckResult(image_id, True, "no layer data recorded (empty image)")
            return CheckResult(image_id, False, "tar-split metadata is missing: cannot reassemble", expected)
        meta = open(files.image_root(image_id) / TAR_DATA_FILE, "rb")  # noqa: SIM115 -- closed by the stream
        with contextlib.closing(open_layer(image_id, meta, driver, None)) as stream:
            while chunk := stream.read1(_CHUNK):
                if progress is not None:
                    progress(len(chunk))
            actual = stream.digest
    except (DigestMismatch, CorruptMetadata, InvalidArchive) as exc:
        return CheckResult(image_id, False, str(exc) or type(exc).__name__)
    except (LayerStoreError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
            reason = f"no space left on {exc.filename or files.root}"
        return CheckResult(image_id, False, f"could not verify: {reason}", unverified=True)
    if expected is None:
        return CheckResult(image_id, True, "reassembled; no digest recorded to compare", None, actual)
    if actual != expected:
        return CheckResult(
            image_id, False, f"digest mismatch: reassembled {actual}, recorded {expected}", expected, actual
        )
    return CheckResult(image_id, True, "ok", expected, actual)


def collect_garbage(files: ImageFiles, driver: Driver, whole_ids: list[str]) -> GCReport:
    """Remove leftovers of killed processes (see `Graph.gc`); `whole_ids` are the images now visible."""
    staging = sweep_staging(files, driver)
    for image_id in files.metadata_ids():  # a digest or blob list being replaced when its writer was killed
        staging += [f"{image_id}/{name}" for name in sweep_atomic_temporaries(files.image_root(image_id))]
    released = tuple(i for i in whole_ids if driver.release_stale(i))
    # Only image IDs: other layers of the driver (read-write layers, say) are not the store's to remove.
    pending = [i for i in driver.layers() if is_valid_id(i) and not files.has_metadata(i)]
    removed: list[str] = []
    while pending:
        still = []
        for layer_id in pending:
            with files.locked(layer_id, blocking=False) as got:
                if not got or files.has_metadata(layer_id):
                    continue
                try:
                    driver.remove(layer_id, force=True)
                except LayerNotFound:
                    continue  # removed meanwhile by the `rm` that had renamed its metadata away
                except LayerInUse:
                    still.append(layer_id)  # an orphan child still stands on it
                    continue
                removed.append(layer_id)
        if len(still) == len(pending):
            break
        pending = still
    driver_removed = driver.gc(live_ids=files.metadata_ids())
    return GCReport(tuple(removed), tuple(staging), released, tuple(driver_removed), tuple(sweep_locks(files, driver)))
