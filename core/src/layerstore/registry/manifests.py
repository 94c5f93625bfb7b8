"""Manifests on a registry: fetch by tag or digest (size-capped, digest-checked) and upload.

A manifest is small JSON, so it is the one thing read into memory; a
registry that sends more than `MAX_MANIFEST_SIZE` bytes is refused rather
than believed (the reference registry's own limit is 4 MiB).
"""

from __future__ import annotations

import json

from ..errors import DigestMismatch, ImageNotFound, LimitExceeded, RegistryError, UnsupportedMediaType
from ..images.descriptor import INDEX_TYPES, MANIFEST_TYPES, MAX_JSON_SIZE, sha256_of
from ..images.reference import is_digest
from .client import RegistryClient, error_codes

__all__ = ["ACCEPT", "MAX_MANIFEST_SIZE", "get_manifest", "head_manifest", "put_manifest"]

MAX_MANIFEST_SIZE = MAX_JSON_SIZE
ACCEPT = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES))


def _not_found(client: RegistryClient, repository: str, reference: str, code: str) -> ImageNotFound:
    where = f"{client.registry}/{repository}"
    if code == "NAME_UNKNOWN":
        return ImageNotFound(f"repository {where} does not exist on the registry; check the name")
    sep = "@" if reference.startswith("sha256:") else ":"
    return ImageNotFound(f"image {where}{sep}{reference} is not on the registry (unknown repository, tag or "
                         f"digest); check the name")


def get_manifest(client: RegistryClient, repository: str, reference: str, *,
                 max_size: int = MAX_MANIFEST_SIZE) -> tuple[bytes, str]:
    """The manifest or index `reference` (a tag or a digest) of `repository`: bytes and media type.

    Raises `ImageNotFound` for an unknown repository, tag or digest,
    `LimitExceeded` past `max_size`, `DigestMismatch` when the bytes do not
    hash to the digest asked for, `UnsupportedMediaType` for anything that is
    not a Docker schema 2 or OCI manifest or index.
    """
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("GET", path, scope=f"repository:{repository}:pull", headers={"Accept": ACCEPT})
    try:
        if response.status == 404:
            code, _ = error_codes(response)
            raise _not_found(client, repository, reference, code)
        if response.status != 200:
            client.check(response, f"GET manifest {repository}:{reference}")
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_size:
            raise LimitExceeded(f"the manifest of {client.registry}/{repository}:{reference} is {length} bytes, "
                                f"more than the limit of {max_size}; refusing it")
        data = response.read(max_size + 1, decode_content=True)
        if len(data) > max_size:
            raise LimitExceeded(f"the manifest of {client.registry}/{repository}:{reference} is larger than "
                                f"the limit of {max_size} bytes; refusing it")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    finally:
        response.release_conn()
    if reference.startswith("sha256:") and sha256_of(data) != reference:
        raise DigestMismatch(f"manifest {client.registry}/{repository}@{reference} from the registry has digest "
                             f"{sha256_of(data)}; the registry sent other bytes than asked for")
    if media_type not in MANIFEST_TYPES | INDEX_TYPES:
        # Registries may label by the manifest's own mediaType field only.
        try:
            declared = json.loads(data).get("mediaType", "")
        except (ValueError, AttributeError):
            declared = ""
        if declared in MANIFEST_TYPES | INDEX_TYPES:
            media_type = declared
        else:
            raise UnsupportedMediaType(
                f"{client.registry}/{repository}:{reference} has media type {media_type or declared or 'none'}, "
                f"not a Docker schema 2 or OCI manifest or index"
            )
    return data, media_type


def head_manifest(client: RegistryClient, repository: str, reference: str) -> str | None:
    """The digest of the manifest or index `reference` (a tag) names now, from a ``HEAD`` request.

    None when the registry does not say (no ``Docker-Content-Digest``, or any
    status but 200): the caller then fetches the manifest.  Registries count
    a ``GET`` of a manifest as a pull (Docker Hub's rate limits), not a ``HEAD``.
    """
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("HEAD", path, scope=f"repository:{repository}:pull", headers={"Accept": ACCEPT})
    try:
        digest = response.headers.get("Docker-Content-Digest", "") if response.status == 200 else ""
        response.drain_conn()
    finally:
        response.release_conn()
    return digest if is_digest(digest) else None


def put_manifest(client: RegistryClient, repository: str, reference: str, data: bytes, media_type: str) -> str:
    """Upload a manifest under `reference` (a tag or its digest); returns its digest."""
    path = f"/v2/{repository}/manifests/{reference}"
    response = client.request("PUT", path, scope=f"repository:{repository}:pull,push",
                              headers={"Content-Type": media_type}, body=data)
    if response.status not in (200, 201):
        client.check(response, f"PUT manifest {repository}:{reference}")
    response.drain_conn()
    response.release_conn()
    digest = sha256_of(data)
    returned = response.headers.get("Docker-Content-Digest")
    if returned and returned != digest:
        raise RegistryError(f"registry {client.registry} stored manifest {repository}:{reference} as {returned}, "
                            f"not {digest}")
    return digest
