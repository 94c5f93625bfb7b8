"""`RegistryDestination`: a registry repository as an `ImageDestination` (what ``push`` writes to)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from ..errors import DigestMismatch, InvalidReference
from ..images.descriptor import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Descriptor, sha256_of
from ..images.reference import Reference, parse_reference
from .blobs import blob_exists, cancel_upload, mount_blob, upload_blob
from .client import RegistryClient, RegistryOptions
from .manifests import put_manifest

__all__ = ["RegistryDestination"]


class RegistryDestination:
    """The repository of `reference` on its registry; the manifest goes under its tag (or by digest).

    Blobs are uploaded as they are written (a registry has no transaction):
    an image becomes visible when its manifest is put, so `commit` has
    nothing left to do and `close` without a manifest leaves only
    unreferenced blobs, which the registry's garbage collection removes.
    `uploaded`, `mounted` and `present` list the blob digests uploaded,
    mounted from another repository and found there already, for summaries
    and tests.
    """

    def __init__(self, reference: Reference, options: RegistryOptions | None = None) -> None:
        self.reference = reference
        self.client = RegistryClient(reference.registry, options)
        self._repository = reference.repository
        self.uploaded: list[str] = []
        self.mounted: list[str] = []
        self.present: list[str] = []
        self._authenticated = False
        self._spare_upload: str | None = None

    @property
    def description(self) -> str:
        """``docker://registry/repository[:tag]``."""
        return f"docker://{self.reference}"

    @property
    def location(self) -> str:
        """``registry/repository``: recorded with pushed blobs so later pushes skip or mount them."""
        return f"{self.reference.registry}/{self._repository}"

    def supported_manifest_types(self) -> tuple[str, ...]:
        """OCI and Docker schema 2 manifests and indexes (OCI preferred)."""
        return (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST)

    def _authenticate(self) -> None:
        if not self._authenticated:
            self.client.authenticate(f"repository:{self._repository}:pull,push")
            self._authenticated = True

    def has_blob(self, descriptor: Descriptor, *, mount_from: Sequence[str] = ()) -> bool:
        """True when the repository has the blob (``HEAD``), or a cross-repository mount from one of the
        `mount_from` locations on this registry gave it.

        A mount the registry declines opens an upload session, which the next
        `put_blob` uses (and `close` cancels if none comes).
        """
        if blob_exists(self.client, self._repository, descriptor.digest, for_push=True):
            self.present.append(descriptor.digest)
            return True
        for location in mount_from:
            source = _same_registry_repository(location, self.reference.registry)
            if source is None or source == self._repository:
                continue
            self._authenticate()
            mounted, session = mount_blob(self.client, self._repository, descriptor.digest, source)
            if mounted:
                self.mounted.append(descriptor.digest)
                return True
            if session is not None:
                self._cancel_spare()
                self._spare_upload = session
        return False

    def _cancel_spare(self) -> None:
        spare, self._spare_upload = self._spare_upload, None
        if spare is not None:
            cancel_upload(self.client, self._repository, spare)

    def put_blob(self, stream: BinaryIO, media_type: str, *, expected: Descriptor | None = None,
                 self_checked: bool = False) -> Descriptor:
        """Upload a blob (monolithic when `expected` is given, else chunked); returns its descriptor.

        The digest is computed while uploading whatever `self_checked` says:
        the registry is told it and checks it.
        """
        self._authenticate()
        session, self._spare_upload = self._spare_upload, None
        digest, size = upload_blob(self.client, self._repository, stream, expected=expected, location=session)
        if expected is not None and (digest != expected.digest or size != expected.size):
            raise DigestMismatch(f"blob {expected.digest}: pushed {size} bytes with digest {digest}")
        self.uploaded.append(digest)
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def put_manifest(self, data: bytes, media_type: str, *, names: Sequence[str] = ()) -> str:
        """Put the manifest under this destination's tag (by digest when it has none); returns the digest.

        `names` (the names the image has in the store) are ignored: a push
        names its destination itself.
        """
        self._authenticate()
        digest = sha256_of(data)
        put_manifest(self.client, self._repository, self.reference.tag or digest, data, media_type)
        return digest

    def commit(self) -> None:
        """Nothing to do: the manifest put made the image visible."""

    def close(self) -> None:
        """Cancel an unused upload session and close the connections."""
        try:
            self._cancel_spare()
        finally:
            self.client.close()

    def __enter__(self) -> RegistryDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same_registry_repository(location: str, registry: str) -> str | None:
    """The repository of `location` (``registry/repository``) when it is on `registry`, else None."""
    try:
        ref = parse_reference(location, default_tag=None)
    except InvalidReference:
        return None
    return ref.repository if ref.registry == registry else None
