"""Opening an image archive of any supported format, and choosing a writer by format name."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArchive
from ._archivefiles import open_reader
from .docker_archive import DockerArchiveDestination, docker_archive_sources, is_docker_archive
from .oci_layout import OciLayoutDestination, is_oci_layout, oci_layout_sources
from .transport import ImageDestination, ImageSource

__all__ = ["FORMATS", "is_image_archive", "open_destination", "open_sources"]

FORMATS = ("docker-archive", "oci", "oci-dir")


def open_sources(path: Path) -> list[ImageSource]:
    """One `ImageSource` per image in `path`: an OCI layout (directory or tar) or a docker-archive.

    `InvalidArchive` with a one-line reason for anything else (a zip file,
    an empty or truncated file, a plain layer tar).  Close the sources.
    """
    reader = open_reader(path)
    try:
        if is_oci_layout(reader):
            return list(oci_layout_sources(reader, f"oci:{path}"))
        if is_docker_archive(reader):
            return list(docker_archive_sources(reader, f"docker-archive:{path}"))
    except BaseException:
        reader.close()
        raise
    reader.close()
    raise InvalidArchive(
        f"{path} is not an image archive (no oci-layout, manifest.json or repositories at its top); "
        "a single layer tar is imported with `layerstore import`"
    )


def is_image_archive(path: Path) -> bool:
    """True when `path` is a tar or directory with ``manifest.json`` or ``oci-layout`` at its top."""
    try:
        reader = open_reader(path)
    except InvalidArchive:
        return False
    try:
        return reader.exists("manifest.json") or reader.exists("oci-layout")
    finally:
        reader.close()


def open_destination(path: Path, fmt: str) -> ImageDestination:
    """A writer of `fmt` (``docker-archive``, ``oci`` for a tar, ``oci-dir`` for a directory) at `path`."""
    if fmt == "docker-archive":
        return DockerArchiveDestination(path)
    if fmt in ("oci", "oci-dir"):
        return OciLayoutDestination(path, as_dir=fmt == "oci-dir")
    raise ValueError(f"unknown archive format {fmt!r} (choose {', '.join(FORMATS)})")
