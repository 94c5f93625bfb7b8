"""Blobs on a registry: download with verification and range resume, existence checks, mounts, uploads.

`BlobReader` streams one blob and checks its size and sha256 as the bytes go
by: reading past the end of a blob whose bytes differ from its digest raises
`DigestMismatch` naming the blob.  When the connection drops mid-blob, it
asks again with ``Range: bytes=<offset>-`` (with backoff, as many times as
the client retries) and goes on where it stopped; a registry that ignores
ranges is read again from the start and the first bytes are skipped.

Uploads follow the distribution spec: ``POST`` opens an upload session, a
blob whose digest is known goes up in one streamed ``PUT`` (monolithic), one
whose digest is only known at the end (compressed on the fly) goes up in
``PATCH`` chunks of `CHUNK_SIZE` bytes and is closed by a ``PUT ?digest=``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from typing import IO, cast
from urllib.parse import quote, urlencode

from urllib3.exceptions import HTTPError

from ..errors import AuthenticationFailed, DigestMismatch, ImageNotFound, RegistryError
from ..images.descriptor import Descriptor
from .client import RegistryClient, Response, error_codes

__all__ = ["CHUNK_SIZE", "BlobReader", "blob_exists", "cancel_upload", "mount_blob", "upload_blob"]

CHUNK_SIZE = 8 * 1024 * 1024
_READ_SIZE = 1024 * 1024


class BlobReader(io.RawIOBase):
    """A verified, resumable stream of one blob of `repository` (read it to EOF, then close it)."""

    def __init__(self, client: RegistryClient, repository: str, descriptor: Descriptor) -> None:
        super().__init__()
        self._client = client
        self._repository = repository
        self._descriptor = descriptor
        self._hash = hashlib.sha256()
        self._offset = 0
        self._response: Response | None = None
        self._resumes = 0
        self._open()

    @property
    def resumes(self) -> int:
        """How many times the download was resumed after a dropped connection."""
        return self._resumes

    def _name(self) -> str:
        return f"blob {self._descriptor.digest} of {self._client.registry}/{self._repository}"

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        path = f"/v2/{self._repository}/blobs/{self._descriptor.digest}"
        response = self._client.request("GET", path, scope=f"repository:{self._repository}:pull", headers=headers)
        if response.status == 404:
            code, _ = error_codes(response)
            response.release_conn()
            raise ImageNotFound(f"{self._name()} is not on the registry ({code or 'BLOB_UNKNOWN'})")
        if response.status == 200 and self._offset:
            self._skip(response, self._offset)
        elif response.status not in (200, 206) or (response.status == 206 and not self._offset):
            self._client.check(response, f"GET {self._name()}")
        self._response = response

    def _skip(self, response: Response, count: int) -> None:
        while count:
            data = response.read(min(count, _READ_SIZE), decode_content=False)
            if not data:
                raise RegistryError(f"{self._name()} ended early while resuming; retry")
            count -= len(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while True:
            data = self._read_some(len(view))
            if data is None:
                continue
            view[: len(data)] = data
            return len(data)

    def _read_some(self, size: int) -> bytes | None:
        if self._response is None:
            return b""
        try:
            data = self._response.read(min(size, _READ_SIZE), decode_content=False)
        except (HTTPError, OSError) as exc:
            self._resume(exc)
            return None
        if data:
            self._offset += len(data)
            if self._offset > self._descriptor.size:
                raise DigestMismatch(f"{self._name()} is longer than its size {self._descriptor.size}")
            self._hash.update(data)
            return data
        if self._offset < self._descriptor.size:
            self._resume(RegistryError("connection closed early"))
            return None
        self._finish()
        return b""

    def _resume(self, exc: BaseException) -> None:
        self._release()
        if self._resumes >= self._client.options.retries:
            raise RegistryError(f"{self._name()}: download failed after {self._resumes} resumes ({exc}); retry")
        time.sleep(min(self._client.options.backoff * (2 ** self._resumes), 8.0))
        self._resumes += 1
        self._open()

    def _finish(self) -> None:
        if self._response is not None:
            self._response.release_conn()
            self._response = None
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._descriptor.digest:
            raise DigestMismatch(f"{self._name()} has digest {actual}: its bytes differ from its digest; "
                                 f"the registry's copy is corrupt")

    def _release(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def close(self) -> None:
        self._release()
        super().close()


def blob_exists(client: RegistryClient, repository: str, digest: str, *, for_push: bool = False) -> bool:
    """True when `repository` has the blob `digest` (a ``HEAD`` request).

    `for_push` asks with the push token the upload that may follow needs
    anyway, instead of a pull token of its own.
    """
    scope = _upload_scope(repository) if for_push else f"repository:{repository}:pull"
    response = client.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope)
    response.drain_conn()
    response.release_conn()
    if response.status == 200:
        return True
    if response.status == 404:
        return False
    client.check(response, f"HEAD blob {digest} of {repository}")
    return False


def _upload_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def mount_blob(client: RegistryClient, repository: str, digest: str, source_repository: str) -> tuple[bool, str | None]:
    """Ask the registry to link blob `digest` of `source_repository` into `repository`.

    Returns (True, None) when it did (201).  A registry that cannot mount
    (blob not there, no access to the source) answers 202 with an upload
    session instead: returns (False, its location), for the upload that
    follows (`upload_blob`'s `location`; `cancel_upload` if unused).  A
    refusal of the source's authorization is no error either: the blob is
    then uploaded.
    """
    scope = f"{_upload_scope(repository)} repository:{source_repository}:pull"
    query = urlencode({"mount": digest, "from": source_repository})
    try:
        response = client.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", scope=scope)
    except AuthenticationFailed:
        return False, None
    response.drain_conn()
    response.release_conn()
    if response.status == 201:
        return True, None
    location = response.headers.get("Location")
    return False, str(location) if response.status == 202 and location else None


def cancel_upload(client: RegistryClient, repository: str, location: str) -> None:
    """Cancel an upload session that will not be used (best effort: the registry expires it anyway)."""
    with contextlib.suppress(RegistryError):
        response = client.request("DELETE", location, scope=_upload_scope(repository))
        response.drain_conn()
        response.release_conn()


def _start_upload(client: RegistryClient, repository: str) -> str:
    # Authenticate first: the streamed bodies that follow cannot be sent twice.
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", scope=_upload_scope(repository))
    if response.status != 202 or not response.headers.get("Location"):
        client.check(response, f"starting an upload to {repository}")
    response.drain_conn()
    response.release_conn()
    return str(response.headers["Location"])


def _with_query(location: str, **params: str) -> str:
    return location + ("&" if "?" in location else "?") + urlencode(params, quote_via=quote)


class _HashingReader(io.RawIOBase):
    """Passes a stream through, hashing and counting it."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size if size and size > 0 else _READ_SIZE)
        self.hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def _finish_upload(client: RegistryClient, repository: str, response: Response, digest: str) -> None:
    if response.status != 201:
        code, detail = error_codes(response)
        response.release_conn()
        if code == "DIGEST_INVALID":
            raise DigestMismatch(f"registry {client.registry} refused blob {digest} for {repository}: "
                                 f"its bytes do not match the digest ({detail})")
        raise RegistryError(f"registry {client.registry}: uploading blob {digest} to {repository} failed "
                            f"with HTTP {response.status}" + (f" ({detail})" if detail else ""))
    response.drain_conn()
    response.release_conn()


def upload_blob(client: RegistryClient, repository: str, stream: IO[bytes], *,
                expected: Descriptor | None = None, location: str | None = None) -> tuple[str, int]:
    """Upload the blob read from `stream` to EOF; returns (digest, size).

    With `expected` (digest and size known) the blob goes up in one streamed
    ``PUT``; otherwise in chunks, the digest computed on the way.  A digest
    or size that differs from `expected` raises `DigestMismatch` and the
    registry keeps nothing.  `location` is an upload session already open
    (the answer to a mount that did not happen); without it one is opened.
    """
    if location is None:
        location = _start_upload(client, repository)
    scope = _upload_scope(repository)
    reader = _HashingReader(stream)
    if expected is not None:
        url = _with_query(location, digest=expected.digest)
        response = client.request("PUT", url, scope=scope, body=cast("IO[bytes]", reader),
                                  headers={"Content-Type": "application/octet-stream",
                                           "Content-Length": str(expected.size)})
        if reader.size != expected.size or "sha256:" + reader.hash.hexdigest() != expected.digest:
            response.release_conn()
            raise DigestMismatch(f"blob {expected.digest} read back as {reader.size} bytes with digest "
                                 f"sha256:{reader.hash.hexdigest()}; it changed while being pushed")
        _finish_upload(client, repository, response, expected.digest)
        return expected.digest, expected.size
    offset = 0
    while True:
        chunk = _read_chunk(reader)
        if not chunk:
            break
        response = client.request("PATCH", location, scope=scope, body=chunk, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            "Content-Length": str(len(chunk)),
        })
        if response.status != 202 or not response.headers.get("Location"):
            client.check(response, f"uploading a chunk to {repository}")
        response.drain_conn()
        response.release_conn()
        location = str(response.headers["Location"])
        offset += len(chunk)
    digest = "sha256:" + reader.hash.hexdigest()
    response = client.request("PUT", _with_query(location, digest=digest), scope=scope, body=b"",
                              headers={"Content-Length": "0"})
    _finish_upload(client, repository, response, digest)
    return digest, reader.size


def _read_chunk(reader: _HashingReader) -> bytes:
    parts = []
    size = 0
    while size < CHUNK_SIZE:
        data = reader.read(min(_READ_SIZE, CHUNK_SIZE - size))
        if not data:
            break
        parts.append(data)
        size += len(data)
    return b"".join(parts)
