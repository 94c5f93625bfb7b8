"""The export seal: proof that a layer's tar-split metadata is the one its import wrote.

An export rebuilds the layer tar from two things: the tar-split metadata
(headers, padding and everything else between file contents, written
verbatim) and the files of the layer, each checked against its recorded size
and CRC-64 as it is read (as tar-split and containers-storage check them).
If the metadata is byte for byte what the import recorded, the rebuilt tar
can only differ from the imported one where a file's content changed without
changing its CRC-64.  So the import records, next to the metadata, a seal::

    sha256:<hex of tar-data.json.gz> sha256:<hex of the layer tar>

and an export whose metadata still has that sha256, and whose recorded
layer digest is still the sealed one, skips hashing the whole tar (about
0.55 s of CPU per GiB here, with SHA instructions).  Anything else (no seal,
a malformed one, metadata rewritten since, a digest set since with
`Graph.set_digest`) makes the export hash the whole tar and compare it with
the recorded digest at the end, as it always did.  ``layerstore check``
always hashes the whole tar.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["is_sealed", "seal_text"]


def _sha256_of(file: IO[bytes]) -> str:
    import hashlib  # here: most commands open the store without hashing anything (OpenSSL takes ms to load)

    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def seal_text(metadata: Path, layer_digest: str) -> bytes:
    """The seal of the finished tar-split file `metadata` for a layer tar of digest `layer_digest`."""
    with open(metadata, "rb") as file:
        return f"{_sha256_of(file)} {layer_digest}\n".encode()


def is_sealed(seal: Path, metadata: IO[bytes], layer_digest: str) -> bool:
    """Whether `seal` vouches for the open tar-split file `metadata` as the one recorded for `layer_digest`.

    Reads `metadata` from its start and leaves it at its start again.  False
    when the seal is missing or malformed, names another layer digest, or the
    metadata's sha256 differs: then only hashing the whole export can tell.
    """
    try:
        text = seal.read_text(encoding="ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    fields = text.split()
    if len(fields) != 2 or fields[1] != layer_digest:
        return False
    metadata.seek(0)
    try:
        return _sha256_of(metadata) == fields[0]
    finally:
        metadata.seek(0)
