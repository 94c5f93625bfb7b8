"""`RegistrySource`: one image of a registry repository as an `ImageSource` (what ``pull`` reads)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, BinaryIO, cast

from ..images.descriptor import Descriptor
from ..images.reference import Reference
from .blobs import BlobReader
from .client import RegistryClient, RegistryOptions
from .manifests import MAX_MANIFEST_SIZE, get_manifest, head_manifest
from .spool import Spool

__all__ = ["RegistrySource"]


class RegistrySource:
    """The image `reference` names on its registry.

    `prefetch` starts `jobs` parallel downloads that run ahead of the reader
    into a bounded spool under `spool_dir`; `open_blob` then follows them.
    Every blob stream checks size and digest itself and resumes dropped
    connections with HTTP ranges.  Close the source to stop downloads and
    delete the spool.
    """

    def __init__(self, reference: Reference, options: RegistryOptions | None = None, *, jobs: int = 3,
                 spool_dir: str | os.PathLike[str] | None = None,
                 max_manifest_size: int = MAX_MANIFEST_SIZE) -> None:
        self.reference = reference
        self.client = RegistryClient(reference.registry, options)
        self._repository = reference.repository
        self._jobs = jobs
        self._spool_dir = spool_dir
        self._spool: Spool | None = None
        self._max_manifest_size = max_manifest_size

    @property
    def description(self) -> str:
        """``docker://registry/repository:tag`` (or ``@digest``)."""
        return f"docker://{self.reference}"

    @property
    def location(self) -> str:
        """``registry/repository``: recorded with the pulled layers, so that a push to another repository of
        the same registry mounts them from here."""
        return f"{self.reference.registry}/{self._repository}"

    def top_manifest(self) -> tuple[bytes, str]:
        """The manifest or index the reference names (a digest reference is checked against its bytes)."""
        tag_or_digest = self.reference.digest or self.reference.tag or "latest"
        return get_manifest(self.client, self._repository, tag_or_digest, max_size=self._max_manifest_size)

    def current_digest(self) -> str | None:
        """The digest of what the reference names now, without fetching it: the reference's own digest, or
        the registry's answer to a ``HEAD`` of the tag (None when it gives none)."""
        if self.reference.digest:
            return self.reference.digest
        return head_manifest(self.client, self._repository, self.reference.tag or "latest")

    def manifest(self, digest: str) -> tuple[bytes, str]:
        """A manifest an index names, by digest (checked)."""
        return get_manifest(self.client, self._repository, digest, max_size=self._max_manifest_size)

    def names(self) -> tuple[str, ...]:
        """The reference itself (``registry/repository:tag`` or ``…@sha256:…``), the name a pull stores.

        A digested name is kept as podman keeps it: ``images`` shows the
        repository (tag ``<none>``), and the name pulled is a name that
        ``push``, ``save`` and ``inspect`` take.
        """
        return (str(self.reference),)

    def _open_direct(self, descriptor: Descriptor) -> IO[bytes]:
        return cast(IO[bytes], BlobReader(self.client, self._repository, descriptor))

    def prefetch(self, descriptors: Sequence[Descriptor]) -> None:
        """Start downloading `descriptors` in parallel (at most `jobs` ahead of the reader)."""
        if not descriptors:
            return
        if self._spool is None:
            self._spool = Spool(self._open_direct, jobs=self._jobs, directory=self._spool_dir)
        self._spool.start(descriptors)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A verified stream of the blob; raises `DigestMismatch` at its end when the bytes are wrong."""
        if self._spool is not None and self._spool.has(descriptor):
            return cast(BinaryIO, self._spool.open(descriptor))
        return cast(BinaryIO, self._open_direct(descriptor))

    def close(self) -> None:
        """Stop downloads, delete the spool, close connections; idempotent."""
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        self.client.close()

    def __enter__(self) -> RegistrySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
