"""Opening the recorded members of a tar inside a mounted layer: the ``open_file`` of `assemble`.

The recorded name loses a leading ``./`` or ``/`` and is looked up below the
layer root as layers are extracted: symbolic links on the way are followed
with the root as ``/``, never out of it (`layerstore.archive.inroot`).  A name
with a ``..`` component is `CorruptMetadata`; a final symbolic link is not
followed (a regular file was recorded there, so the open fails).
"""

from __future__ import annotations

import errno
import os
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from ..archive.inroot import open_in_root
from ..errors import CorruptMetadata, DigestMismatch

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RawFile", "layer_file_opener", "layer_opener", "member_path"]

# O_NONBLOCK: a FIFO put where a file was recorded reads as empty (a changed file) instead of
# blocking the export for ever; regular files ignore the flag.
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def member_path(name: str) -> str:
    """The path of recorded member `name` relative to the layer root (no leading ``./`` or ``/``)."""
    relative = name.lstrip("/")
    while relative.startswith("./"):
        relative = relative[2:].lstrip("/")
    return relative


class RawFile:
    """A file descriptor with just what the assembler uses (read, close, context manager): no buffer, no fstat."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, size: int) -> bytes:
        """Read up to `size` bytes."""
        return os.read(self._fd, size)

    def close(self) -> None:
        """Close the descriptor (once)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def layer_opener(root: str | os.PathLike[str]) -> Callable[[str], IO[bytes]]:
    """Return an ``open_file`` for `assemble` that reads member contents from the layer directory ``root``.

    A missing or replaced file raises `OSError`, which `assemble` reports as
    a changed file (`DigestMismatch`).
    """
    base = os.fspath(root)

    def open_file(name: str) -> IO[bytes]:
        relative = member_path(name)
        if ".." in relative.split("/"):
            raise CorruptMetadata(f"tar-split metadata names {name!r}, outside the layer; re-import the layer")
        root_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_in_root(root_fd, relative, _FLAGS)
        finally:
            os.close(root_fd)
        return os.fdopen(fd, "rb")

    return open_file


def layer_file_opener(
    layer_id: str, root_fd: int, *, elsewhere: Callable[[str], BinaryIO] | None = None
) -> Callable[[str], BinaryIO]:
    """Return an ``open_file`` reading members below the open layer directory `root_fd` without buffering.

    The export path: a missing file or one replaced by a symlink raises
    `DigestMismatch` naming it and `layer_id`.  With `elsewhere`, any file
    that cannot be opened below `root_fd` (the directory of the layer's own
    files, where a path through a lower layer is missing) is opened by
    ``elsewhere(name)`` instead, which then decides.
    """

    def open_file(name: str) -> BinaryIO:
        rel = member_path(name)
        if not rel or (".." in rel and ".." in rel.split("/")):  # the substring test first: it is cheaper
            raise CorruptMetadata(f"layer {layer_id}: tar-split data names an unsafe file {name!r}")
        try:
            # Members written through a symbolic link are read back through it, inside the layer.
            fd = open_in_root(root_fd, rel, _FLAGS)
        except OSError as exc:
            if elsewhere is not None:
                return elsewhere(name)
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise DigestMismatch(
                    f"layer {layer_id}: file {name!r} is missing from the stored layer (it was removed on disk)"
                ) from None
            if exc.errno == errno.ELOOP:
                raise DigestMismatch(
                    f"layer {layer_id}: file {name!r} of the stored layer was replaced by a symlink"
                ) from None
            raise
        return cast(BinaryIO, RawFile(fd))

    return open_file
