"""Opening an image archive of any supported format, and choosing a writer by format name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidArchive, LayerStoreError

if TYPE_CHECKING:
    from .transport import ImageDestination, ImageSource

# The archive formats are imported by the functions that read or write them: `import` asks only
# `is_image_archive`, which mostly decides from the first member of a layer tar (see `_may_be_image_tar`).

__all__ = ["FORMATS", "is_image_archive", "open_destination", "open_sources"]

FORMATS = ("docker-archive", "oci", "oci-dir")


def open_sources(path: Path, *, spool_dir: Path | None = None, label: str | None = None) -> list[ImageSource]:
    """One `ImageSource` per image in `path`: an OCI layout (directory or tar) or a docker-archive.

    A tar may be compressed (gzip, bzip2, xz, zstd): it is decompressed into
    an unnamed temporary file in `spool_dir` (default: the system's temporary
    directory) that the sources' `close` removes.  `InvalidArchive` with a
    one-line reason for anything else (a zip file, an empty or truncated
    file, a plain layer tar).  Messages name the archive by `label` (default:
    the path).  Close the sources.
    """
    from ._archivefiles import open_reader
    from .docker_archive import docker_archive_sources, is_docker_archive
    from .oci_layout import is_oci_layout, oci_layout_sources

    reader = open_reader(path, spool_dir=spool_dir, label=label)
    try:
        if is_oci_layout(reader):
            return list(oci_layout_sources(reader, f"oci:{reader.label}"))
        if is_docker_archive(reader):
            return list(docker_archive_sources(reader, f"docker-archive:{reader.label}"))
    except BaseException:
        reader.close()
        raise
    reader.close()
    raise InvalidArchive(
        f"{reader.label} is not an image archive (no oci-layout, manifest.json or repositories at its top); "
        "a single layer tar is imported with `layerstore import`"
    )


def is_image_archive(path: Path) -> bool:
    """True when `path` is a tar or directory with ``manifest.json`` or ``oci-layout`` at its top.

    A plain tar whose first member could not be at the top of an image archive
    is answered from that member alone, so a layer tar of many thousands of
    files is not indexed before it is imported (see `_may_be_image_tar`).
    """
    if not path.is_dir() and not _may_be_image_tar(path):
        return False
    from ._archivefiles import open_reader

    try:
        reader = open_reader(path)
    except InvalidArchive:
        return False
    try:
        return reader.exists("manifest.json") or reader.exists("oci-layout")
    finally:
        reader.close()


# Every top-level entry of a docker-archive or OCI layout is one of these: its
# metadata files, ``blobs/``, and per-layer or config files named by hex digest.
_IMAGE_TOP = re.compile(
    r"(manifest\.json|repositories|oci-layout|index\.json|blobs|[0-9a-f]{64}(\.json|\.tar)?)(/.*)?"
)
_LOOK_PAST = 8  # "." entries skipped before the first real member


def _may_be_image_tar(path: Path) -> bool:
    """False only when the first real member of the tar `path` rules out an image archive.

    Every member at the top of an image archive has one of the names of
    `_IMAGE_TOP`, whatever order its writer chose, so a first member named
    otherwise (``etc/``, ``usr/bin/...``) settles it.  An unreadable start
    answers True: the caller then reads the whole member list and decides.
    """
    # The layer's own tar reader, which `import` loads anyway (``tarfile`` would cost it ~4 ms).
    from ..archive.tarstream import TarReader

    try:
        with open(path, "rb") as f:
            reader = TarReader(f)
            for _ in range(_LOOK_PAST):
                member = reader.next()
                if member is None:
                    return True
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name.strip("/.") != "":
                    return _IMAGE_TOP.fullmatch(name.rstrip("/")) is not None
    except (LayerStoreError, OSError, ValueError):  # whatever the start says, the whole list decides
        return True
    return True


def open_destination(path: Path, fmt: str, *, journal: Path | None = None) -> ImageDestination:
    """A writer of `fmt` (``docker-archive``, ``oci`` for a tar, ``oci-dir`` for a directory) at `path`.

    A regular file is replaced (or a directory created) only when the save
    commits; a device or FIFO is written in place.  With `journal` (a
    store's `Graph.output_journal`) the temporary output is recorded, so that
    the store removes it if the process is killed.
    """
    if fmt == "docker-archive":
        from .docker_archive import DockerArchiveDestination

        return DockerArchiveDestination(path, journal=journal)
    if fmt in ("oci", "oci-dir"):
        from .oci_layout import OciLayoutDestination

        return OciLayoutDestination(path, as_dir=fmt == "oci-dir", journal=journal)
    raise ValueError(f"unknown archive format {fmt!r} (choose {', '.join(FORMATS)})")
