"""The export stream: a stored layer's tar rebuilt from its tar-split metadata and its mounted files.

`open_layer` opens the layer's files (the driver's directory of the layer's
own files when it has one, else the mounted layer: one reference either way)
and returns a `LayerStream` that reassembles the tar block by block, checks
every file's size and CRC-64 as it reads it, and (unless told the metadata
is sealed) hashes the whole tar in the background and checks the sha256
against the imported digest at the end.  Closing the stream releases the
directories and the references.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import DigestMismatch
from ..hashing import BackgroundSha256
from .assembler import assemble
from .layerfiles import layer_file_opener

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..mounts import Mounts
    from .assembler import AssembledTar

__all__ = ["LayerStream", "open_layer"]


class LayerStream(io.BufferedIOBase):
    """A reassembled layer tar: releases the mount and the metadata on close, verifies the digest at EOF.

    ``read1`` hands out the reassembled blocks without copying them; ``digest``
    is the sha256 of the whole tar once the end was read (None while it is
    not, and always None for a stream opened with ``hashed=False``).
    """

    def __init__(
        self,
        image_id: str,
        source: AssembledTar,
        closers: list[Callable[[], object]],
        expected: str | None,
        *,
        hashed: bool = True,
    ) -> None:
        super().__init__()
        self._id = image_id
        self._source = source
        self._closers = closers
        self._expected = expected
        self._blocks = source.chunks()
        self._hash: BackgroundSha256 | None = BackgroundSha256() if hashed else None
        self._block = b""
        self._offset = 0
        self._done = False
        self.digest: str | None = None

    @property
    def checked_against(self) -> str | None:
        """The digest these bytes are proven to have once read to the end without error, else None.

        It is `expected`, checked by the whole-tar hash (``hashed``) or, for
        sealed metadata (``hashed=False``), by the seal and every file's size
        and CRC-64.  A consumer that needs that digest (``save``) need not
        hash again, as long as it reads to the end.
        """
        return self._expected

    def readable(self) -> bool:
        """Always True."""
        return True

    def _next_block(self) -> bytes:
        if self._done:
            return b""
        block = next(self._blocks, b"")
        if block:
            if self._hash is not None:
                self._hash.update(block)
            return block
        self._done = True
        if self._hash is None:
            return b""
        self.digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and self.digest != self._expected:
            raise DigestMismatch(
                f"layer {self._id}: reassembled tar is {self.digest} but {self._expected} was imported; "
                "files of the layer changed on disk (run `layerstore check`)"
            )
        return b""

    def read1(self, size: int | None = -1, /) -> bytes:
        """The rest of the current block (at most `size` bytes), without copying when it is returned whole."""
        if self._offset < len(self._block):
            block, start = self._block, self._offset
        else:
            block, start = self._next_block(), 0
        end = len(block) if size is None or size < 0 else min(len(block), start + size)
        if end < len(block):
            self._block, self._offset = block, end
        else:
            self._block, self._offset = b"", 0
        return block if start == 0 and end == len(block) else block[start:end]

    def read(self, size: int | None = -1, /) -> bytes:
        """Read `size` bytes (all with a negative size), fewer only at the end."""
        if size is None or size < 0:
            return b"".join(iter(self.read1, b""))
        first = self.read1(size)
        if len(first) == size or not first:
            return first
        pieces = [first]
        got = len(first)
        while got < size and (piece := self.read1(size - got)):
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`; return the number of bytes."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Release the mount and the metadata (once)."""
        if self.closed:
            return
        try:
            with contextlib.ExitStack() as stack:
                for closer in reversed(self._closers):
                    stack.callback(closer)
                stack.callback(self._source.close)
                if self._hash is not None:
                    stack.callback(self._hash.close)
        finally:
            super().close()


def open_layer(
    layer_id: str, metadata: BinaryIO, mounts: Mounts, expected: str | None, *, hashed: bool = True
) -> LayerStream:
    """Reassemble layer `layer_id` from the open tar-split `metadata` and the layer's files.

    Files are read from the driver's directory of the layer's own files
    (`Mounts.diff_files`) when it has one, without mounting; a file not
    found there (its path leads through a lower layer) is read from the
    layer mounted by `Mounts.get`, mounted at the first such file.  A driver
    without that directory is mounted at once.  The stream owns `metadata`
    (closed with it) and the references (released on close).  A file whose
    size or CRC-64 differs from the recorded one raises `DigestMismatch`
    naming it.  With `expected` (a ``sha256:`` digest) a tar that differs
    raises `DigestMismatch` at the end.  ``hashed=False`` skips the sha256 of
    the whole tar (and so `expected` is not checked): only for metadata known
    to be the recorded one (`layerstore.graph.seal`).
    """
    closers: list[Callable[[], object]] = [metadata.close]
    try:
        own = mounts.diff_files(layer_id)
        if own is None:
            open_file = layer_file_opener(layer_id, _held_root(layer_id, mounts.get(layer_id), mounts, closers))
        else:
            mounted = _MountedOnDemand(layer_id, mounts, closers)
            own_fd = _held_root(layer_id, own, mounts, closers)
            open_file = layer_file_opener(layer_id, own_fd, elsewhere=mounted.open_file)
        source = assemble(metadata, open_file)
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
        raise
    return LayerStream(layer_id, source, closers, expected, hashed=hashed)


def _held_root(layer_id: str, root: str, mounts: Mounts, closers: list[Callable[[], object]]) -> int:
    """Open the directory `root` that one reference on `layer_id` holds; closing it releases the reference."""
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        mounts.put(layer_id)
        raise

    def release() -> None:
        try:
            os.close(root_fd)  # before put: an open directory would keep a mount busy
        finally:
            mounts.put(layer_id)

    closers.append(release)
    return root_fd


class _MountedOnDemand:
    """The mounted layer, for files its own-files directory does not have: mounted at the first one."""

    def __init__(self, layer_id: str, mounts: Mounts, closers: list[Callable[[], object]]) -> None:
        self._id = layer_id
        self._mounts = mounts
        self._closers = closers  # the stream's list: a mount taken later is released with the rest
        self._open: Callable[[str], BinaryIO] | None = None

    def open_file(self, name: str) -> BinaryIO:
        """Open member `name` in the mounted layer (mounting it first), as `layer_file_opener` does."""
        if self._open is None:
            root_fd = _held_root(self._id, self._mounts.get(self._id), self._mounts, self._closers)
            self._open = layer_file_opener(self._id, root_fd)
        return self._open(name)
