"""Reading files of an image archive that is a directory or a tar, and writing either, atomically."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO, cast

from ..errors import InvalidArchive, LayerStoreError
from ..fdwrite import write_all, write_stream
from ..kit.atomic import fsync_dir
from ..outfile import open_output, open_output_dir
from .descriptor import MAX_JSON_SIZE

__all__ = ["ArchiveReader", "ArchiveWriter", "copy_decompressed", "open_reader"]

_CHUNK = 1 << 20


class ArchiveReader:
    """Named files of an image archive: a directory, or a tar (members streamed from the file, not copied).

    A compressed tar (gzip, bzip2, xz or zstd, as ``docker load`` and
    ``podman load`` accept) is first decompressed into an unnamed temporary
    file in `spool_dir` (default: the system's temporary directory), which
    disappears when the reader is closed or the process ends.  Messages name
    the archive by `label` (default: the path).
    """

    def __init__(self, path: Path, *, spool_dir: Path | None = None, label: str | None = None) -> None:
        self.path = path
        self.label = str(path) if label is None else label
        self._tar: tarfile.TarFile | None = None
        self._spool: IO[bytes] | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if not path.is_dir():
            try:
                self._spool = _decompressed_spool(path, spool_dir)
                if self._spool is not None:
                    self._tar = tarfile.open(fileobj=self._spool, mode="r:")  # noqa: SIM115 -- closed by close()
                else:
                    self._tar = tarfile.open(path, "r:")  # noqa: SIM115 -- closed by close()
                for member in self._tar:
                    name = member.name
                    while name.startswith("./"):
                        name = name[2:]
                    self._members[name.rstrip("/")] = member
            except (tarfile.TarError, EOFError) as exc:
                self.close()
                raise InvalidArchive(f"{self.label}: not a readable tar archive ({exc})") from None
            except BaseException:
                self.close()
                raise

    def exists(self, name: str) -> bool:
        """True when the archive has a regular file `name`."""
        if self._tar is None:
            return (self.path / name).is_file()
        try:
            self._member(name)
        except InvalidArchive:
            return False
        return True

    def names(self) -> list[str]:
        """Every regular file name (tar) or top-level entry (directory)."""
        if self._tar is None:
            return sorted(os.listdir(self.path))
        return sorted(n for n, m in self._members.items() if m.isfile())

    def size(self, name: str) -> int:
        """The size of file `name`."""
        if self._tar is None:
            return (self.path / name).stat().st_size
        return self._member(name).size

    def _member(self, name: str) -> tarfile.TarInfo:
        """The regular file member `name`, following links inside the archive (``<id>/layer.tar`` often is one)."""
        current = name
        for _ in range(16):
            member = self._members.get(current)
            if member is None:
                break
            if member.isfile():
                return member
            if member.issym():
                current = posixpath.normpath(posixpath.join(posixpath.dirname(current), member.linkname))
            elif member.islnk():
                current = posixpath.normpath(member.linkname)
            else:
                break
        raise InvalidArchive(f"{self.label}: {name} is missing from the archive")

    def open(self, name: str) -> BinaryIO:
        """A stream of file `name`; `InvalidArchive` when it is missing."""
        if self._tar is None:
            if ".." in name.split("/") or name.startswith("/"):
                raise InvalidArchive(f"{self.label}: unsafe file name {name!r}")
            try:
                return open(self.path / name, "rb")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise InvalidArchive(f"{self.label}: {name} is missing from the layout") from None
        stream = self._tar.extractfile(self._member(name))
        if stream is None:
            raise InvalidArchive(f"{self.label}: {name} is not a regular file")
        return cast(BinaryIO, _TruncationChecked(cast(BinaryIO, stream), self.label, name))

    def read(self, name: str, limit: int = MAX_JSON_SIZE) -> bytes:
        """The bytes of a small file (`InvalidArchive` when larger than `limit`)."""
        with contextlib.closing(self.open(name)) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidArchive(f"{self.label}: {name} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        """Close the tar file (and remove the decompressed copy); idempotent."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _decompressed_spool(path: Path, spool_dir: Path | None) -> IO[bytes] | None:
    """The tar in the compressed file `path`, decompressed into an unnamed temporary file; None when not compressed.

    An archive's members are read in the order its manifest names them, so
    a compressed stream, which cannot seek, is decompressed once up front.
    """
    from ..archive.compression import detect_compression

    with open(path, "rb") as f:
        if detect_compression(f.read(6)) == "none":
            return None
        f.seek(0)
        spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 -- returned, closed by the reader
        try:
            copy_decompressed(f, spool, str(path))
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool


def copy_decompressed(source: BinaryIO, out: IO[bytes], what: str) -> None:
    """Copy `source` to `out`, decompressed (gzip, bzip2, xz, zstd or none); corrupt data is `InvalidArchive`
    naming `what` (a path, ``standard input``)."""
    from ..archive.compression import decompressed

    try:
        with decompressed(source) as plain:
            shutil.copyfileobj(plain, out, _CHUNK)
    except InvalidArchive as exc:
        raise InvalidArchive(f"{what}: {exc}") from None


class _TruncationChecked(io.RawIOBase):
    """A tar member stream whose premature end is an `InvalidArchive` naming the member."""

    def __init__(self, stream: BinaryIO, label: str, name: str) -> None:
        super().__init__()
        self._stream = stream
        self._what = f"{label}: {name}"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
        try:
            data = self._stream.read(len(view))
        except (tarfile.TarError, OSError) as exc:
            raise InvalidArchive(f"{self._what}: the archive is truncated or corrupt ({exc})") from None
        view[: len(data)] = data
        return len(data)


def open_reader(path: Path, *, spool_dir: Path | None = None, label: str | None = None) -> ArchiveReader:
    """An `ArchiveReader` of `path` (see there for `spool_dir` and `label`), with one-line errors for what is not
    there."""
    if not path.exists():
        raise InvalidArchive(f"{label or path}: no such file or directory")
    return ArchiveReader(path, spool_dir=spool_dir, label=label)


class ArchiveWriter:
    """Writes an archive as a directory or a tar next to `path`, and moves it into place on `commit`.

    The output is the user's: a regular file (or a new name) is replaced
    atomically on `commit`, a device or FIFO (``-o /dev/stdout``) is written
    in place and never replaced (`layerstore.outfile.open_output`); a
    directory is filled beside `path` and renamed there
    (`layerstore.outfile.open_output_dir`).  Until `commit` nothing new
    exists at a file or directory `path`; `abort` removes everything written.
    With `journal` (the store's `Graph.output_journal`) the temporary output
    is recorded there, so that the next command on the store removes it
    after a SIGKILL.  A tar member needs its size first: blobs of unknown
    size are spooled to an anonymous temporary file (in `journal`'s
    directory when given, else beside a file output).
    """

    def __init__(self, path: Path, *, as_dir: bool, journal: Path | None = None) -> None:
        self.path = path
        self.as_dir = as_dir
        if not as_dir and path.is_dir():
            raise LayerStoreError(f"{path} is a directory; the archive is a file (or use --format oci-dir)")
        parent = path.absolute().parent
        if not parent.is_dir():
            raise LayerStoreError(f"{parent}: no such directory for the output")
        self._spool_dir = str(journal) if journal is not None else None
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None  # the directory being filled
        self._tar: int | None = None  # the descriptor of the tar being written
        self._offset = 0
        self._files: set[str] = set()
        if as_dir:
            self._dir = self._stack.enter_context(open_output_dir(path, journal))
        else:
            self._tar = self._stack.enter_context(open_output(path, journal))
            if self._spool_dir is None and stat.S_ISREG(os.fstat(self._tar).st_mode):
                self._spool_dir = str(parent)

    def has(self, name: str) -> bool:
        """True when `name` was written already."""
        return name in self._files

    def write(self, name: str, stream: BinaryIO, size: int | None = None) -> None:
        """Write file `name` from `stream` (to EOF; `size` bytes exactly when given)."""
        if self._dir is not None:
            target = self._dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                shutil.copyfileobj(stream, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        elif size is None:
            with tempfile.TemporaryFile(dir=self._spool_dir) as spool:
                shutil.copyfileobj(stream, spool, _CHUNK)
                size = spool.tell()
                spool.seek(0)
                self._add(name, spool, size)
        else:
            self._add(name, stream, size)
        self._files.add(name)

    def write_hashed(self, stream: BinaryIO, name_of: Callable[[str], str]) -> tuple[str, int]:
        """Write `stream` under the name `name_of(digest)`, its digest computed while writing.

        Returns (digest, size); a blob whose name was written already is dropped.
        """
        if self._dir is None:
            with tempfile.TemporaryFile(dir=self._spool_dir) as spool:
                digest, size = _spool_hashed(stream, spool)
                name = name_of(digest)
                if name not in self._files:
                    spool.flush()
                    spool.seek(0)
                    self._add(name, cast(BinaryIO, spool), size)
                    self._files.add(name)
            return digest, size
        with tempfile.NamedTemporaryFile(dir=self._dir, prefix=".upload-", delete=False) as spool:
            try:
                digest, size = _spool_hashed(stream, spool)
                name = name_of(digest)
                if name not in self._files:
                    spool.flush()
                    os.fsync(spool.fileno())
                    target = self._dir / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(spool.name, target)
                    self._files.add(name)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(spool.name)
        return digest, size

    def _add(self, name: str, stream: BinaryIO, size: int) -> None:
        """Append member `name`: a PAX header as `tarfile` writes it, then `stream` (exactly `size` bytes)."""
        fd = self._tar
        if fd is None:
            return
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        self._write(fd, info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        copied = write_stream(stream, fd)  # the blocks the stream hands out, not copied again
        if copied != size:
            raise LayerStoreError(f"{self.path}: member {name} has {copied} bytes, not {size}; nothing was saved")
        self._offset += copied
        self._write(fd, bytes(-size % tarfile.BLOCKSIZE))

    def _write(self, fd: int, data: bytes) -> None:
        write_all(fd, data)
        self._offset += len(data)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a small file (replacing an earlier one in a directory)."""
        self.write(name, io.BytesIO(data), len(data))

    def commit(self) -> None:
        """Finish the archive and move it to `path` (a device or FIFO has had it written)."""
        fd = self._tar
        if fd is not None:
            # The end of the archive as `tarfile` writes it: two zero blocks, then zeros up to a whole record.
            self._write(fd, bytes(2 * tarfile.BLOCKSIZE))
            self._write(fd, bytes(-self._offset % tarfile.RECORDSIZE))
        if self._dir is not None:
            made = {parent for name in self._files for parent in (self._dir / name).parents
                    if parent.is_relative_to(self._dir) and parent != self._dir}
            for directory in sorted(made, key=lambda p: len(p.parts), reverse=True):  # deepest first
                fsync_dir(directory)
        self._tar = self._dir = None
        self._stack.close()  # fsync, rename into place

    def abort(self) -> None:
        """Remove everything written; idempotent."""
        if self._tar is None and self._dir is None:
            return
        self._tar = self._dir = None
        abandoned = LayerStoreError(f"{self.path}: the save was abandoned")
        with contextlib.suppress(OSError):
            self._stack.__exit__(type(abandoned), abandoned, None)


def _spool_hashed(stream: BinaryIO, spool: BinaryIO | IO[bytes]) -> tuple[str, int]:
    """Copy `stream` to `spool` to its end; return its ``sha256:`` digest and size."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
        spool.write(chunk)
    return "sha256:" + hasher.hexdigest(), size
