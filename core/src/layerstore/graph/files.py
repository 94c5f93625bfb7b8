"""The on-disk layout of the image store: paths, metadata files, locks and staging.

Everything that touches ``<root>/graph`` goes through `ImageFiles`, on the
model of moby's ``image/fs.go``: one place knows the file names, writes them
atomically and durably, and locks images across processes.  Layout::

    <root>/graph/<id>/json               image metadata (unknown fields preserved)
    <root>/graph/<id>/layersize          decimal size of the layer's regular files
    <root>/graph/<id>/checksum           "sha256:<hex>" of the uncompressed layer tar
    <root>/graph/<id>/tar-data.json.gz   tar-split metadata for byte-exact export
    <root>/graph/<id>/tar-data.seal      sha256 of that metadata and of the layer tar, recorded at import
                                         (lets an export skip hashing the whole tar: `layerstore.graph.seal`)
    <root>/graph/_tmp/                   staging and trash; swept when a store opens
    <root>/graph/_locks/<id>             flock files (one per image ID; removed with the image)
    <root>/graph/idmaps                  the uid/gid maps the store was created with
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptMetadata, DigestNotSet, IDMapMismatch, ImageNotFound
from ..flock import held_flock
from ..idtools import IDMappings, format_id_maps
from ..image import Image, is_valid_id
from ..kit.atomic import atomic_write, fsync_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DIGEST_FILE",
    "GRAPH_DIR",
    "JSON_FILE",
    "LAYERSIZE_FILE",
    "SEAL_FILE",
    "SPACE_ERRNOS",
    "TAR_DATA_FILE",
    "ImageFiles",
    "fsync_dir",
    "write_atomic",
    "write_staged",
]

JSON_FILE = "json"
LAYERSIZE_FILE = "layersize"
DIGEST_FILE = "checksum"
TAR_DATA_FILE = "tar-data.json.gz"
SEAL_FILE = "tar-data.seal"
GRAPH_DIR = "graph"
TMP_DIR = "_tmp"
LOCKS_DIR = "_locks"
ID_MAPS_FILE = "idmaps"
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_staged(path: Path, data: bytes) -> None:
    """Write the new file `path` (mode 0600) in a staging directory and flush it to disk.

    No temporary name and no directory sync: nobody reads a staging
    directory, whose names one `fsync_dir` makes durable before it is renamed into place.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600) so that readers see the old file or the whole new one, durably."""
    atomic_write(path, data, mode=0o600)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class ImageFiles:
    """The metadata directories, lock files and staging area of one store root.

    Creates ``graph``, ``_tmp`` and ``_locks`` (owned by the remapped root
    under `id_maps`) and refuses a store made with other ID maps.
    """

    def __init__(self, root: Path, id_maps: IDMappings) -> None:
        self.root = root
        self.graph = root / GRAPH_DIR
        self.tmp = self.graph / TMP_DIR
        self.locks = self.graph / LOCKS_DIR
        for path in (root, self.graph, self.tmp, self.locks):
            path.mkdir(mode=0o700, exist_ok=True)
            if not id_maps.is_identity:
                uid, gid = id_maps.root_pair
                os.chown(path, uid, gid)
        self._check_id_maps(id_maps)

    def _check_id_maps(self, id_maps: IDMappings) -> None:
        """Record the ID maps of a new store; refuse to open one created with other maps (`IDMapMismatch`).

        Files are stored with host IDs, so one store holds one mapping (as
        Docker keeps one root per remapping); mixing two would mix owners.
        """
        path = self.graph / ID_MAPS_FILE
        wanted = f"uids {format_id_maps(id_maps.uids)}\ngids {format_id_maps(id_maps.gids)}\n"
        try:
            recorded = path.read_text()
        except FileNotFoundError:
            # Best effort: a store on a read-only or full filesystem still opens for reading.
            with contextlib.suppress(OSError):
                write_atomic(path, wanted.encode())
            return
        if recorded != wanted:
            have = "; ".join(line.strip() for line in recorded.splitlines() if line.strip())
            want = "; ".join(line.strip() for line in wanted.splitlines())
            raise IDMapMismatch(
                f"store {self.root} was created with ID maps ({have}) but is opened with ({want}); "
                "open it with the same uid/gid maps, or use another --root for this mapping"
            )

    def image_root(self, image_id: str) -> Path:
        """The metadata directory of `image_id` (``<root>/graph/<id>``)."""
        return self.graph / image_id

    @contextlib.contextmanager
    def locked(self, image_id: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock of `image_id` across processes; yield False at once when not `blocking` and it is taken."""
        path = self.locks / image_id
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                with held_flock(fd, shared=shared, blocking=blocking) as got:
                    # Lock files are unlinked (by `drop_lock_file`) while locked: a lock taken on a
                    # file that is no longer at `path` protects nothing, so take the current one.
                    if got and not _same_file(fd, path):
                        continue
                    yield got
                    return
            finally:
                os.close(fd)

    def drop_lock_file(self, image_id: str) -> None:
        """Remove the lock file of `image_id`; call with its exclusive lock held and the image gone."""
        with contextlib.suppress(FileNotFoundError):
            (self.locks / image_id).unlink()

    def lock_names(self) -> list[str]:
        """The names of the lock files, sorted."""
        try:
            return sorted(os.listdir(self.locks))
        except FileNotFoundError:
            return []

    def has_metadata(self, image_id: str) -> bool:
        """True when ``graph/<id>/json`` exists."""
        return (self.graph / image_id / JSON_FILE).is_file()

    def metadata_ids(self) -> list[str]:
        """The IDs that have metadata (whether or not the driver has their layer), sorted."""
        try:
            names = os.listdir(self.graph)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_valid_id(n) and self.has_metadata(n))

    def make_staging(self, image_id: str, kind: str) -> Path:
        """A new directory ``_tmp/<id>.<kind>.<random>`` (``new`` for registering, ``del`` for trash)."""
        path = self.tmp / f"{image_id}.{kind}.{os.urandom(8).hex()}"
        path.mkdir(mode=0o700)
        return path

    def trash_name(self, image_id: str) -> Path:
        """A fresh trash path ``_tmp/<id>.del.<random>`` (not created: a rename must work on a full filesystem)."""
        return self.tmp / f"{image_id}.del.{os.urandom(8).hex()}"

    def read_json(self, image_id: str) -> bytes:
        """The image's JSON exactly as stored; `ImageNotFound` when there is none."""
        try:
            return (self.image_root(image_id) / JSON_FILE).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"no image with ID {image_id}") from None

    def load(self, image_id: str) -> tuple[Image, int | None]:
        """The stored image and its recorded layer size (None when the ``layersize`` file is missing).

        Both files are read from one open directory, so an image that a
        concurrent delete renames away meanwhile still reads whole: a size
        missing only because the directory moved would otherwise make the
        reader recompute it, mounting the layer the delete is removing.
        """
        root = self.image_root(image_id)
        path = root / JSON_FILE
        try:
            dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ImageNotFound(f"no image with ID {image_id}") from None
        try:
            data = _read_at(dir_fd, JSON_FILE)
            if data is None:
                raise ImageNotFound(f"no image with ID {image_id}")
            size_data = _read_at(dir_fd, LAYERSIZE_FILE)
        finally:
            os.close(dir_fd)
        image = Image.from_json(data, source=str(path))
        if image.id != image_id:
            raise CorruptMetadata(f"{path}: image stored at {image_id} has the wrong ID {image.id}")
        if size_data is None:
            return image, None
        try:
            return image, int(size_data.strip())
        except ValueError:
            shown = size_data[:40].decode(errors="replace")
            raise CorruptMetadata(f"{root / LAYERSIZE_FILE}: layer size {shown!r} is not a number") from None

    def save_size(self, image_id: str, size: int) -> None:
        """Record a recomputed layer size (best effort: a read-only store still reads)."""
        with contextlib.suppress(OSError):
            write_atomic(self.image_root(image_id) / LAYERSIZE_FILE, str(size).encode())

    def digest(self, image_id: str, *, required: bool) -> str | None:
        """The recorded layer digest; None (or `DigestNotSet` when `required`) when there is none."""
        path = self.image_root(image_id) / DIGEST_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            if required:
                raise DigestNotSet(f"digest is not set for layer {image_id}") from None
            return None
        if ":" not in text:
            raise CorruptMetadata(f"{path}: {text[:80]!r} is not a digest")
        return text

    def has_tar_data(self, image_id: str) -> bool:
        """True when the image has tar-split metadata (``tar-data.json.gz``)."""
        return (self.image_root(image_id) / TAR_DATA_FILE).exists()


def _read_at(dir_fd: int, name: str) -> bytes | None:
    """The whole content of file `name` in directory `dir_fd`; None when there is no such file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as f:
        return f.read()
