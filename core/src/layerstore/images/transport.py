"""Where images come from and go to: the `ImageSource` and `ImageDestination` protocols.

The image store moves images between itself and the outside world only
through these two protocols, so that a docker-archive, an OCI layout and a
registry are interchangeable (the model of containers/image's transports):

* loading (``layerstore load``, ``pull``) reads the top-level manifest of an
  `ImageSource`, picks a platform from an index, reads the config, decides
  which layers it already stores (by chain ID), tells the source which blobs
  it will read (`ImageSource.prefetch`), then reads them one by one in
  order, recording with each layer the blob digest and the source's
  `location`.  The store verifies every digest and size itself: a source never has
  to be trusted and never verifies for the store.
* saving (``layerstore save``, ``push``) asks an `ImageDestination` which
  blobs it already has, writes the missing ones (layers first, config next),
  then the manifest, then commits.  A destination that is closed without
  `commit` leaves nothing behind that looks like a finished image.

Progress of blob transfers is reported to a `TransferProgress`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from .descriptor import Descriptor

__all__ = ["ImageDestination", "ImageSource", "NoProgress", "TransferProgress"]


@runtime_checkable
class ImageSource(Protocol):
    """One image (or index) to read: an entry of a docker-archive, an OCI layout, a registry tag."""

    @property
    def description(self) -> str:
        """Where the image is, for messages: ``docker-archive:app.tar``, ``oci:dir:tag``, ``docker://host/repo:tag``."""
        ...

    @property
    def location(self) -> str | None:
        """The blob namespace the blobs are read from (``host:port/repository`` for a registry, the same form
        as `ImageDestination.location`), recorded with the layers loaded so that a later push to another
        repository of that registry can mount them instead of uploading; None for archives."""
        ...

    def top_manifest(self) -> tuple[bytes, str]:
        """The top-level manifest or index, as bytes and media type.

        Sources that store a manifest return its bytes unchanged (their digest
        is the image's manifest digest); formats without one (a docker-archive)
        return a Docker schema 2 manifest built from what they hold.
        """
        ...

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A manifest that an index names by digest, as bytes and media type."""
        ...

    def names(self) -> tuple[str, ...]:
        """Names the source carries for this image (RepoTags, ``org.opencontainers.image.ref.name``), maybe none."""
        ...

    def prefetch(self, descriptors: Sequence[Descriptor]) -> None:
        """A hint: exactly these blobs will be opened, in this order.  Sources may start fetching ahead."""
        ...

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A stream of the blob's bytes as stored (compressed layers stay compressed).

        The caller reads it to EOF and checks digest and size; the source may
        stop early with an error but never returns more or other bytes on
        purpose.  Raises `layerstore.errors.ImageNotFound` (or a more precise
        error) when the blob is not there.
        """
        ...

    def close(self) -> None:
        """Release files, connections and spools; idempotent."""
        ...


@runtime_checkable
class ImageDestination(Protocol):
    """Somewhere to write images: a docker-archive, an OCI layout, a registry repository."""

    @property
    def description(self) -> str:
        """Where the image goes, for messages (same forms as `ImageSource.description`)."""
        ...

    @property
    def location(self) -> str | None:
        """A stable name of the blob namespace (``host:port/repository`` for a registry), recorded with the
        blobs written there so that a later push can skip or cross-mount them; None for archives."""
        ...

    def supported_manifest_types(self) -> tuple[str, ...]:
        """Manifest media types this destination accepts, preferred first."""
        ...

    def has_blob(self, descriptor: Descriptor, *, mount_from: Sequence[str] = ()) -> bool:
        """True when the destination already has this blob, or has just made it available without an upload
        (a registry's cross-repository mount from one of the `mount_from` locations)."""
        ...

    def put_blob(self, stream: BinaryIO, media_type: str, *, expected: Descriptor | None = None,
                 self_checked: bool = False) -> Descriptor:
        """Store a blob read from `stream` to EOF; return its descriptor (digest and size computed while writing).

        With `expected`, a digest or size that differs raises
        `layerstore.errors.DigestMismatch` and nothing of the blob stays.
        ``self_checked=True`` says that `stream` itself raises unless it
        yields content of ``expected.digest`` (a layer rebuilt from the store,
        `LayerStream.checked_against`): a destination may then count the size
        instead of hashing again.
        """
        ...

    def put_manifest(self, data: bytes, media_type: str, *, names: Sequence[str] = ()) -> str:
        """Store a manifest (after its config and layers) under `names`; returns the manifest digest."""
        ...

    def commit(self) -> None:
        """Make everything written visible (write index.json / manifest.json, finish the archive)."""
        ...

    def close(self) -> None:
        """Release resources; without `commit`, remove what was written where the format allows it."""
        ...


class TransferProgress:
    """Receives progress of blob transfers; this base class ignores everything (subclass what you need)."""

    def blob_started(self, descriptor: Descriptor, *, reused: bool) -> None:
        """A blob transfer begins; `reused` when nothing has to be moved (already stored or present)."""

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        """`nbytes` more bytes of the blob were moved."""

    def blob_finished(self, descriptor: Descriptor) -> None:
        """The blob is complete and verified."""


NoProgress = TransferProgress
