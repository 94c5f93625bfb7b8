"""What the archive formats' sources and destinations share.

A source reads one image of an archive that an `ArchiveReader` has open;
a destination writes blobs under names derived from their digests, and
nothing appears at its path before `commit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, cast

from ._archivefiles import ArchiveReader, ArchiveWriter
from ._streams import SizeCheckedReader, VerifyingReader
from .descriptor import Descriptor

__all__ = ["ArchiveSource", "BlobFileDestination"]


class _ArchiveEnd:
    """What every archive source and destination has: a description, and no location."""

    def __init__(self, description: str) -> None:
        self._description = description

    @property
    def description(self) -> str:
        """The format and the path (``oci:<path>``, ``docker-archive:<path>``)."""
        return self._description

    @property
    def location(self) -> str | None:
        """None: an archive is no place a registry can mount blobs from, and holds no blobs of earlier saves."""
        return None


class ArchiveSource(_ArchiveEnd):
    """Base of the archive sources: one image of an open archive, read in place (`close` closes the archive)."""

    def __init__(self, reader: ArchiveReader, description: str) -> None:
        super().__init__(description)
        self._reader = reader

    def prefetch(self, descriptors: Sequence[Descriptor]) -> None:
        """Nothing to prepare: blobs are files of the archive, read when opened."""

    def close(self) -> None:
        """Close the archive."""
        self._reader.close()


class BlobFileDestination(_ArchiveEnd):
    """Base of the archive destinations: a blob is a file named by `blob_name`; nothing appears before `commit`."""

    def __init__(self, path: Path, *, as_dir: bool, description: str, journal: Path | None = None) -> None:
        super().__init__(description)
        self._writer = ArchiveWriter(path, as_dir=as_dir, journal=journal)
        self._committed = False

    def blob_name(self, digest: str, media_type: str) -> str:
        """The file name of a blob in the archive."""
        raise NotImplementedError

    def has_blob(self, descriptor: Descriptor, *, mount_from: Sequence[str] = ()) -> bool:
        """True when this save wrote the blob already."""
        return self._writer.has(self.blob_name(descriptor.digest, descriptor.media_type))

    def put_blob(self, stream: BinaryIO, media_type: str, *, expected: Descriptor | None = None,
                 self_checked: bool = False) -> Descriptor:
        """Write a blob under its name, verified against `expected` when given (its digest computed otherwise).

        A `self_checked` stream (see `ImageDestination.put_blob`) is only counted, not hashed again.
        """
        if expected is not None:
            checked: VerifyingReader | SizeCheckedReader
            if self_checked:
                checked = SizeCheckedReader(stream, expected.size, f"blob {expected.digest}")
            else:
                checked = VerifyingReader(stream, expected.digest, expected.size, f"blob {expected.digest}")
            self._writer.write(self.blob_name(expected.digest, media_type), cast(BinaryIO, checked), expected.size)
            checked.drain()
            return expected
        digest, size = self._writer.write_hashed(stream, lambda d: self.blob_name(d, media_type))
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def _finish(self, files: dict[str, bytes]) -> None:
        """Write the format's index files and move the archive into place."""
        for name, data in files.items():
            self._writer.write_bytes(name, data)
        self._writer.commit()
        self._committed = True

    def close(self) -> None:
        """Without `commit`, remove everything written."""
        if not self._committed:
            self._writer.abort()
