"""`pull` and `push`: images between the image store and a registry, with a tally of what moved.

Both are thin: the image store does the verifying, skipping, applying and
recording (`ImageStore.load` / `ImageStore.save`); this module opens the
registry end, counts blobs and bytes for the summary (`TransferStats`), and
passes progress on to the caller's `TransferProgress`.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

import attrs

from ..images.reference import parse_reference
from ..images.transport import TransferProgress
from .client import RegistryOptions
from .destination import RegistryDestination
from .manifests import MAX_MANIFEST_SIZE
from .source import RegistrySource

if TYPE_CHECKING:
    from ..images.descriptor import Descriptor, Platform
    from ..images.store import ImageStore, StoredImage

__all__ = ["PullResult", "PushResult", "TransferStats", "pull", "push"]

DEFAULT_JOBS = 3


@attrs.define
class TransferStats(TransferProgress):
    """Counts blobs moved and reused and their bytes, and forwards every event to `forward`."""

    forward: TransferProgress = attrs.field(factory=TransferProgress)
    moved: int = 0
    reused: int = 0
    bytes: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def blob_started(self, descriptor: Descriptor, *, reused: bool) -> None:
        """Count the blob as moved or reused."""
        if reused:
            self.reused += 1
        else:
            self.moved += 1
        self.forward.blob_started(descriptor, reused=reused)

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        """Add `nbytes` to the bytes moved."""
        self.bytes += nbytes
        self.forward.blob_advanced(descriptor, nbytes)

    def blob_finished(self, descriptor: Descriptor) -> None:
        """Pass the event on."""
        self.forward.blob_finished(descriptor)

    @property
    def seconds(self) -> float:
        """Seconds since the transfer started."""
        return time.monotonic() - self.started


@attrs.frozen
class PullResult:
    """What `pull` stored: the image, and the layers fetched and reused with the bytes fetched."""

    image: StoredImage
    reference: str
    layers_fetched: int
    layers_reused: int
    bytes: int
    seconds: float


@attrs.frozen
class PushResult:
    """What `push` did: the image ID (``sha256:…``) and manifest digest pushed, and the blobs (layers and
    config) uploaded, mounted from another repository of the registry, or already present."""

    reference: str
    image_digest: str
    manifest_digest: str
    blobs_uploaded: int
    blobs_mounted: int
    blobs_present: int
    bytes: int
    seconds: float


def pull(store: ImageStore, name: str, *, options: RegistryOptions | None = None, platform: Platform | None = None,
         jobs: int = DEFAULT_JOBS, progress: TransferProgress | None = None,
         max_manifest_size: int = MAX_MANIFEST_SIZE) -> PullResult:
    """Pull `name` (``[registry/]repository[:tag|@digest]``, Docker Hub when no registry) into `store`.

    Layers whose chain is stored are not fetched; the others download on
    `jobs` threads into a bounded spool under the store and are applied in
    order as they arrive.  Any error (a blob whose bytes differ from its
    digest, a registry that stays down) leaves nothing of the image.
    """
    reference = parse_reference(name)
    stats = TransferStats(forward=progress or TransferProgress())
    # The store sweeps its scratch directories at start: a killed pull's spool goes with it.
    spool_dir = store.records.scratch_dir("pull")
    try:
        source = RegistrySource(reference, options, jobs=jobs, spool_dir=spool_dir,
                                max_manifest_size=max_manifest_size)
        try:
            # Pulling a name stored already asks with a HEAD first, as `docker pull` does: an image that did not
            # change costs no GET of its manifest, which registries count as a pull (Docker Hub's rate limits),
            # and no blob.  A new name goes straight to the GET (a HEAD would be one more round trip).
            again = reference.digest is not None or str(reference) in store.records.names()
            image = store.load(source, platform=platform, progress=stats,
                               digest=source.current_digest() if again else None)
        finally:
            source.close()
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    return PullResult(image=image, reference=str(reference), layers_fetched=stats.moved,
                      layers_reused=stats.reused, bytes=stats.bytes, seconds=stats.seconds)


def push(store: ImageStore, name: str, destination: str | None = None, *, options: RegistryOptions | None = None,
         compress: str = "gzip", progress: TransferProgress | None = None) -> PushResult:
    """Push the stored image `name` (a name or ID) to `destination` (default: `name` itself).

    Blobs the repository has are not uploaded (a ``HEAD`` first, then a
    cross-repository mount from another repository of the same registry
    where the blob was pulled from or pushed to before); layers
    are compressed on the fly with `compress` (``gzip``, ``zstd``, ``none``);
    the manifest goes last.  What was pushed is recorded with each layer, so
    a second push uploads nothing.
    """
    target = parse_reference(destination or name)
    image = store.get(name)
    stats = TransferStats(forward=progress or TransferProgress())
    registry = RegistryDestination(target, options)
    digest = store.save([image.id], registry, compress=compress, progress=stats)[0]
    return PushResult(reference=str(target), image_digest=image.digest, manifest_digest=digest,
                      blobs_uploaded=len(registry.uploaded), blobs_mounted=len(registry.mounted),
                      blobs_present=len(registry.present), bytes=stats.bytes, seconds=stats.seconds)
