"""The image store: images (metadata + one layer each) on top of a storage driver.

This is the Docker engine's image ``graph`` (2015) in Python.  Layout under
the store root::

    <root>/graph/<id>/json               image metadata (unknown fields preserved)
    <root>/graph/<id>/layersize          decimal size of the layer's regular files
    <root>/graph/<id>/checksum           "sha256:<hex>" of the uncompressed layer tar
    <root>/graph/<id>/tar-data.json.gz   tar-split metadata for byte-exact export
    <root>/graph/_tmp/                   staging and trash; swept when a store opens
    <root>/graph/_locks/<id>             flock files (one per image ID; removed with the image)
    <root>/graph/idmaps                  the uid/gid maps the store was created with

An image is visible when ``graph/<id>/json`` exists and the driver has the
layer.  ``register`` builds everything in a staging directory named
``_tmp/<id>.new.<random>`` and renames it into place, holding the image's
lock all along; ``delete`` renames the image directory to
``_tmp/<id>.del.<random>`` before removing the layer.  A staging entry whose
lock is free therefore belongs to a process that died, and its driver layer
(if the image is not visible) is an orphan: opening the store removes both.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import attrs

from .capabilities import CreateOpts
from .errors import (
    CorruptMetadata,
    DigestMismatch,
    IDMapMismatch,
    ImageNotFound,
    InvalidArchive,
    LayerInUse,
    LayerNotFound,
    LayerStoreError,
    StorageFull,
)
from .flock import held_flock
from .fstree import remove_tree, remove_tree_quietly
from .hashing import BackgroundSha256
from .idtools import IDMap, IDMappings
from .image import Image, format_created, go_architecture, is_valid_id, validate_id
from .outfile import JOURNAL_PREFIX, sweep_journal_entry
from .truncindex import TruncIndex

if TYPE_CHECKING:
    from .drivers import Driver
    from .tarsplit.assembler import AssembledTar

__all__ = ["CheckResult", "DigestNotSet", "GCReport", "Graph"]

JSON_FILE = "json"
LAYERSIZE_FILE = "layersize"
DIGEST_FILE = "checksum"
TAR_DATA_FILE = "tar-data.json.gz"
GRAPH_DIR = "graph"
TMP_DIR = "_tmp"
LOCKS_DIR = "_locks"
ID_MAPS_FILE = "idmaps"
_CHUNK = 1 << 20
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_log = logging.getLogger(__name__)


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class DigestNotSet(LayerStoreError):
    """The image has no recorded layer digest (``checksum`` file)."""


@attrs.frozen
class CheckResult:
    """The outcome of verifying one layer (`Graph.check`)."""

    id: str
    ok: bool
    message: str
    expected: str | None = None
    actual: str | None = None
    unverified: bool = False
    """True when the layer could not be read (no space, I/O error, a mount failed): not known to be corrupt."""


@attrs.frozen
class GCReport:
    """What `Graph.gc` removed: orphan driver layers, leftover staging entries, references of dead processes,
    the driver's own leftovers and stale lock files."""

    layers: tuple[str, ...] = ()
    staging: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    """IDs of the images whose mount references held by dead processes were released."""
    driver: tuple[str, ...] = ()
    """What the driver's own ``gc`` hook collected (staging, trash, leaked snapshots, layers cut short)."""
    locks: tuple[str, ...] = ()
    """Lock files of images that no longer exist (left by killed processes or older versions)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, durably."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class _LayerStream(io.BufferedIOBase):
    """A reassembled layer tar: releases the mount and the metadata on close, verifies the digest at EOF.

    ``read1`` hands out the reassembled blocks without copying them; ``digest``
    is the sha256 of the whole tar once the end was read.
    """

    def __init__(
        self,
        image_id: str,
        source: AssembledTar,
        closers: list[Callable[[], object]],
        expected: str | None,
    ) -> None:
        super().__init__()
        self._id = image_id
        self._source = source
        self._closers = closers
        self._expected = expected
        self._blocks = source.chunks()
        self._hash = BackgroundSha256()
        self._block = b""
        self._offset = 0
        self._done = False
        self.digest: str | None = None

    def readable(self) -> bool:
        return True

    def _next_block(self) -> bytes:
        if self._done:
            return b""
        block = next(self._blocks, b"")
        if block:
            self._hash.update(block)
            return block
        self._done = True
        self.digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and self.digest != self._expected:
            raise DigestMismatch(
                f"layer {self._id}: reassembled tar is {self.digest} but {self._expected} was imported; "
                "files of the layer changed on disk (run `layerstore check`)"
            )
        return b""

    def read1(self, size: int | None = -1, /) -> bytes:
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
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            with contextlib.ExitStack() as stack:
                for closer in reversed(self._closers):
                    stack.callback(closer)
                stack.callback(self._source.close)
                stack.callback(self._hash.close)
        finally:
            super().close()


class _RawFile:
    """A file descriptor with just what the assembler uses (read, close, context manager): no buffer, no fstat."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, size: int) -> bytes:
        return os.read(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> _RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layer_file_opener(layer_id: str, root_fd: int) -> Callable[[str], BinaryIO]:
    """Open members below the layer directory `root_fd`, links resolved inside it (see `open_in_root`)."""
    from .archive.inroot import open_in_root

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC

    def open_file(name: str) -> BinaryIO:
        rel = name
        while rel.startswith("./"):
            rel = rel[2:]
        rel = rel.lstrip("/")
        if not rel or ".." in rel.split("/"):
            raise CorruptMetadata(f"layer {layer_id}: tar-split data names an unsafe file {name!r}")
        try:
            # Members written through a symbolic link are read back through it, inside the layer.
            fd = open_in_root(root_fd, rel, flags)
        except (FileNotFoundError, NotADirectoryError):
            raise DigestMismatch(
                f"layer {layer_id}: file {name!r} is missing from the stored layer (it was removed on disk)"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DigestMismatch(
                    f"layer {layer_id}: file {name!r} of the stored layer was replaced by a symlink"
                ) from None
            raise
        return cast(BinaryIO, _RawFile(fd))

    return open_file


class Graph:
    """A store of images: metadata under ``<root>/graph`` and layers in `driver`.

    Safe to use from several threads and several processes at once: changes
    to one image are serialised with ``flock`` on a per-image lock file.
    Opening a store sweeps what killed processes left behind.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        driver: Driver,
        uid_maps: Iterable[IDMap] = (),
        gid_maps: Iterable[IDMap] = (),
    ) -> None:
        self.root = Path(root).absolute()
        self.driver = driver
        self.id_maps = IDMappings(tuple(uid_maps), tuple(gid_maps))
        self._graph = self.root / GRAPH_DIR
        self._tmp = self._graph / TMP_DIR
        self._locks = self._graph / LOCKS_DIR
        self._retained: dict[str, set[str]] = {}
        self._retained_lock = threading.Lock()
        for path in (self.root, self._graph, self._tmp, self._locks):
            path.mkdir(mode=0o700, exist_ok=True)
            if not self.id_maps.is_identity:
                uid, gid = self.id_maps.root_pair
                os.chown(path, uid, gid)
        self._check_id_maps()
        self._sweep_staging()

    def __repr__(self) -> str:
        return f"<Graph {self.root} driver={self.driver.name}>"

    def _check_id_maps(self) -> None:
        """Record the ID maps of a new store; refuse to open one created with other maps (`IDMapMismatch`).

        Files are stored with host IDs, so one store holds one mapping (as
        Docker keeps one root per remapping); mixing two would mix owners.
        """
        from .idtools import format_id_maps

        path = self._graph / ID_MAPS_FILE
        wanted = f"uids {format_id_maps(self.id_maps.uids)}\ngids {format_id_maps(self.id_maps.gids)}\n"
        try:
            recorded = path.read_text()
        except FileNotFoundError:
            # Best effort: a store on a read-only or full filesystem still opens for reading.
            with contextlib.suppress(OSError):
                _write_atomic(path, wanted.encode())
            return
        if recorded != wanted:
            have = "; ".join(line.strip() for line in recorded.splitlines() if line.strip())
            want = "; ".join(line.strip() for line in wanted.splitlines())
            raise IDMapMismatch(
                f"store {self.root} was created with ID maps ({have}) but is opened with ({want}); "
                "open it with the same uid/gid maps, or use another --root for this mapping"
            )

    # -- paths, locks, listing ------------------------------------------------

    @property
    def output_journal(self) -> Path:
        """Where commands record temporary output files (see `layerstore.outfile.open_output`)."""
        return self._tmp

    def image_root(self, image_id: str) -> Path:
        """The metadata directory of `image_id` (``<root>/graph/<id>``)."""
        return self._graph / image_id

    @contextlib.contextmanager
    def _locked(self, image_id: str, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
        path = self._locks / image_id
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                with held_flock(fd, shared=shared, blocking=blocking) as got:
                    # Lock files are unlinked (by `_drop_lock_file`) while locked: a lock taken on a
                    # file that is no longer at `path` protects nothing, so take the current one.
                    if got and not _same_file(fd, path):
                        continue
                    yield got
                    return
            finally:
                os.close(fd)

    def _drop_lock_file(self, image_id: str) -> None:
        """Remove the lock file of `image_id`; call with its exclusive lock held and the image gone."""
        with contextlib.suppress(FileNotFoundError):
            (self._locks / image_id).unlink()

    def _has_metadata(self, image_id: str) -> bool:
        return (self._graph / image_id / JSON_FILE).is_file()

    def _is_whole(self, image_id: str) -> bool:
        return self._has_metadata(image_id) and self.driver.exists(image_id)

    def _metadata_ids(self) -> list[str]:
        try:
            names = os.listdir(self._graph)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_valid_id(n) and self._has_metadata(n))

    def ids(self) -> list[str]:
        """The IDs of every whole image, sorted."""
        return [i for i in self._metadata_ids() if self.driver.exists(i)]

    def resolve(self, name: str) -> str:
        """Return the full ID of the image named by `name` (an ID, a unique prefix, or a ``sha256:`` digest).

        A digest names a layer by its chain ID, its diff digest or a recorded
        compressed digest (`layerstore.images.layers.resolve_digest`).

        `InvalidID` for an empty name or one with spaces, `ImageNotFound`,
        `AmbiguousID` naming the candidates.
        """
        if name.startswith("sha256:"):
            from .images.layers import resolve_digest

            return resolve_digest(self, name)
        if is_valid_id(name):
            if self._is_whole(name):
                return name
            raise ImageNotFound(f"no image with ID {name}; `layerstore ls` lists the images")
        return TruncIndex(self.ids()).get(name)

    def _make_staging(self, image_id: str, kind: str) -> Path:
        path = self._tmp / f"{image_id}.{kind}.{secrets.token_hex(8)}"
        path.mkdir(mode=0o700)
        return path

    def _sweep_staging(self) -> list[str]:
        """Remove staging and trash entries of dead processes, and the driver layers they orphaned.

        Never raises: a leftover that cannot be removed is reported as a
        warning naming it, and the sweep goes on (a command must not fail
        because of what a killed one left behind).
        """
        removed: list[str] = []
        try:
            entries = list(os.scandir(self._tmp))
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                _log.warning("could not list the staging directory %s: %s", self._tmp, exc.strerror or exc)
            return removed
        for entry in entries:
            try:
                if self._sweep_entry(entry.name):
                    removed.append(entry.name)
            except (LayerStoreError, OSError) as exc:
                _log.warning("could not remove leftover %s: %s", entry.path, exc)
        return removed

    def _sweep_entry(self, name: str) -> bool:
        path = self._tmp / name
        if name.startswith(JOURNAL_PREFIX):
            return sweep_journal_entry(path)
        image_id = name.split(".", 1)[0]
        if not is_valid_id(image_id):
            # Anonymous leftovers (temporary archives are unlinked at once; these are strays).
            return self._remove_path(path)
        with self._locked(image_id, blocking=False) as got:
            if not got:
                return False  # a live process is working on this image
            if not self._has_metadata(image_id):
                with contextlib.suppress(LayerStoreError, OSError):
                    if self.driver.exists(image_id):
                        self.driver.remove(image_id, force=True)
            removed = self._remove_path(path)
            if not self._has_metadata(image_id) and not self.driver.exists(image_id):
                self._drop_lock_file(image_id)
            return removed

    @staticmethod
    def _remove_path(path: Path) -> bool:
        return remove_tree_quietly(path, _log.warning)

    # -- reading ---------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """True if `name` (an ID or unique prefix) names a whole image: metadata and driver layer."""
        try:
            self.resolve(name)
        except LayerStoreError:
            return False
        return True

    def get(self, name: str) -> Image:
        """Return the image named by `name` (an ID or a unique prefix).

        The layer size is recomputed with the driver's ``diff_size`` (and
        saved) when the ``layersize`` file is missing.
        """
        return self._load(self.resolve(name))

    def _load(self, image_id: str) -> Image:
        root = self.image_root(image_id)
        path = root / JSON_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"no image with ID {image_id}") from None
        image = Image.from_json(raw, source=str(path))
        if image.id != image_id:
            raise CorruptMetadata(f"{path}: image stored at {image_id} has the wrong ID {image.id}")
        size_path = root / LAYERSIZE_FILE
        try:
            text = size_path.read_text()
        except FileNotFoundError:
            image.size = self.driver.diff_size(image_id, image.parent)
            with contextlib.suppress(OSError):
                _write_atomic(size_path, str(image.size).encode())
        else:
            try:
                image.size = int(text.strip())
            except ValueError:
                raise CorruptMetadata(f"{size_path}: layer size {text[:40]!r} is not a number") from None
        return image

    def raw_json(self, name: str) -> bytes:
        """The image's JSON exactly as stored."""
        image_id = self.resolve(name)
        try:
            return (self.image_root(image_id) / JSON_FILE).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(f"no image with ID {image_id}") from None

    def walk_all(self, handler: Callable[[Image], object] | None = None) -> list[Image]:
        """Call `handler` on every image (images whose metadata cannot be read are skipped); return them."""
        images = []
        for image_id in self.ids():
            try:
                image = self._load(image_id)
            except LayerStoreError:
                continue
            images.append(image)
            if handler is not None:
                handler(image)
        return images

    def __iter__(self) -> Iterator[Image]:
        return iter(self.walk_all())

    def map(self) -> dict[str, Image]:
        """Every image, by ID."""
        return {image.id: image for image in self.walk_all()}

    def by_parent(self) -> dict[str, list[Image]]:
        """Images by the ID of their parent; an image without children has no entry."""
        images = self.map()
        result: dict[str, list[Image]] = {}
        for image in images.values():
            if image.parent and image.parent in images:
                result.setdefault(image.parent, []).append(image)
        return result

    def heads(self) -> dict[str, Image]:
        """Images that are no other image's parent, by ID."""
        images = self.map()
        parents = {image.parent for image in images.values() if image.parent}
        return {image_id: image for image_id, image in images.items() if image_id not in parents}

    def children(self, name: str | Image) -> list[str]:
        """The IDs of the images whose parent is the given image, sorted."""
        image_id = name.id if isinstance(name, Image) else self.resolve(name)
        return self._children_of(image_id)

    def _children_of(self, image_id: str) -> list[str]:
        found = []
        for child in self._metadata_ids():
            try:
                image = Image.from_json((self.image_root(child) / JSON_FILE).read_bytes())
            except (LayerStoreError, OSError):
                continue
            if image.parent == image_id:
                found.append(child)
        return found

    def has_children(self, image: str | Image) -> bool:
        """True when another image has `image` as its parent."""
        return bool(self.children(image))

    # -- retain sessions (pulls and builds in progress) -----------------------

    def retain(self, session_id: str, *layer_ids: str) -> None:
        """Hold `layer_ids` for `session_id` so that `delete` refuses them until `release`."""
        with self._retained_lock:
            for layer_id in layer_ids:
                self._retained.setdefault(layer_id, set()).add(session_id)

    def release(self, session_id: str, *layer_ids: str) -> None:
        """Drop the holds of `session_id` on `layer_ids` (unknown ones are ignored)."""
        with self._retained_lock:
            for layer_id in layer_ids:
                holders = self._retained.get(layer_id)
                if holders is None:
                    continue
                holders.discard(session_id)
                if not holders:
                    del self._retained[layer_id]

    def is_held(self, layer_id: str) -> bool:
        """True while some session retains `layer_id`."""
        with self._retained_lock:
            return layer_id in self._retained

    # -- writing ---------------------------------------------------------------

    def create(  # noqa: PLR0917 -- the engine's signature
        self,
        layer_data: BinaryIO | None,
        container_id: str = "",
        container_image: str = "",
        comment: str = "",
        author: str = "",
        container_config: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        *,
        parent: str | None = None,
        storage_opts: Mapping[str, str] | None = None,
    ) -> Image:
        """Create a new image with a fresh ID from `layer_data` (a tar, any compression) and register it.

        As in the engine, `container_image` becomes the parent when
        `container_id` is given; `parent` sets it directly.  `storage_opts`
        are per-layer driver options, as for `register`.
        """
        from .image import generate_id

        if parent is None and container_id and container_image:
            parent = self.resolve(container_image)
        image = Image(
            id=generate_id(),
            parent=parent,
            comment=comment,
            created=format_created(),
            author=author,
            config=config,
            architecture=go_architecture(),
            os="linux",
        )
        if container_id:
            image.container = container_id
            image.container_config = dict(container_config or {})
        self.register(image, layer_data, storage_opts=storage_opts)
        return image

    def register(
        self, image: Image, layer_data: BinaryIO | None, *, storage_opts: Mapping[str, str] | None = None
    ) -> bool:
        """Store `image` with its layer read from `layer_data` (plain, gzip, bzip2, xz or zstd tar).

        `storage_opts` are per-layer driver options (``{"size": "10G"}``: a
        quota on btrfs and zfs); a driver that does not know one refuses it
        (`ConfigError`) and nothing is stored.

        Returns True when this call stored the image and False when it
        already existed (a no-op, also across processes).  Atomic: on any
        failure, interruption included, the driver layer and the staging
        directory are removed and the error re-raised; nothing is visible.
        `image.size` is set to the layer size.
        """
        image_id = validate_id(image.id)
        with self._locked(image_id):
            if self._is_whole(image_id):
                return False
            with contextlib.ExitStack() as stack:
                if image.parent is not None:
                    stack.enter_context(self._locked(image.parent, shared=True))
                    if not self._is_whole(image.parent):
                        raise ImageNotFound(f"parent image {image.parent} of {image_id} is not in the store")
                self._register_locked(image, layer_data, storage_opts or {})
        return True

    def _register_locked(self, image: Image, layer_data: BinaryIO | None, storage_opts: Mapping[str, str]) -> None:
        image_id = image.id
        final = self.image_root(image_id)
        # The graph is the source of truth: leftovers of an image that is not
        # whole (another driver's metadata, an orphan layer) are cleared first.
        if final.exists():
            trash = self._make_staging(image_id, "del")
            os.rename(final, trash / "old")
            remove_tree_quietly(trash, _log.warning)
        if self.driver.exists(image_id):
            self.driver.remove(image_id, force=True)
        staging = self._make_staging(image_id, "new")
        try:
            self.driver.create(image_id, image.parent, CreateOpts(storage_opts=storage_opts))
            digest = None
            if layer_data is not None:
                image.size, digest = self._apply_layer(image, layer_data, staging)
            else:
                image.size = 0
            _write_atomic(staging / LAYERSIZE_FILE, str(image.size).encode())
            if digest is not None:
                _write_atomic(staging / DIGEST_FILE, digest.encode())
            _write_atomic(staging / JSON_FILE, image.to_json())
            _fsync_dir(staging)
            os.rename(staging, final)
            _fsync_dir(self._graph)
        except BaseException as exc:
            with contextlib.suppress(LayerStoreError, OSError):
                if self.driver.exists(image_id):
                    self.driver.remove(image_id, force=True)
            remove_tree_quietly(staging, _log.warning)
            if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
                raise StorageFull(
                    f"no space left on {self.root} (its filesystem is full) while importing image {image_id}; "
                    "free space and import again"
                ) from exc
            raise

    def _apply_layer(self, image: Image, layer_data: BinaryIO, staging: Path) -> tuple[int, str]:
        from .archive.aside import setting_aside
        from .archive.compression import decompressed
        from .recording import LayerRecording

        # Files the extraction removes again (a later whiteout of them in the same
        # tar) are kept aside, then moved into the tar-split metadata.
        with open(staging / TAR_DATA_FILE, "wb") as meta, setting_aside(staging / "aside") as aside:
            plain = decompressed(layer_data)
            try:
                with contextlib.closing(LayerRecording(plain, meta)) as recording:
                    try:
                        size = self.driver.apply_diff(image.id, image.parent, cast(BinaryIO, recording))
                    except OverflowError as exc:  # e.g. a base-256 uid of 2^40 reaching chown
                        raise InvalidArchive(
                            f"layer of image {image.id} has a number out of range ({exc}): owner IDs must be "
                            "below 2^32; fix the tar"
                        ) from None
                    # Everything after the end-of-archive blocks belongs to the
                    # layer's bytes too: finish records and hashes it.
                    digest = recording.finish()
            finally:
                if plain is not layer_data:  # decompressed() may hand back the caller's own stream
                    plain.close()
            meta.flush()
            os.fsync(meta.fileno())
        if aside.kept:
            from .tarsplit.inline import inline_kept

            inline_kept(staging / TAR_DATA_FILE, aside.kept)
            remove_tree(aside.directory)
        return size, digest

    def delete(self, name: str, force: bool = False) -> None:
        """Remove an image atomically: its metadata disappears at once, then its layer.

        Refuses (`LayerInUse`) an image that other images are built on (even
        with `force`: their layers depend on it; delete them first), and,
        unless `force`, one that a session retains or that is mounted.
        """
        image_id = self.resolve(name)
        with self._locked(image_id):
            if not self._has_metadata(image_id):
                raise ImageNotFound(f"no image with ID {image_id}")
            children = self._children_of(image_id)
            if children:
                named = ", ".join(c[:12] for c in children)
                raise LayerInUse(f"image {image_id} has child images ({named}); delete them first")
            if not force and self.is_held(image_id):
                raise LayerInUse(f"image {image_id} is held by a running session; retry later or force")
            driver_has = self.driver.exists(image_id)
            if driver_has and not force:
                refs = self.driver.references(image_id)
                if refs:
                    raise LayerInUse(
                        f"image {image_id} is mounted ({refs} reference{'s' if refs != 1 else ''}); "
                        f"unmount it (`layerstore umount {image_id[:12]}`) or delete with force"
                    )
            # A plain rename, no new directory: deleting must work on a full filesystem.
            trash = self._tmp / f"{image_id}.del.{secrets.token_hex(8)}"
            try:
                os.rename(self.image_root(image_id), trash)
            except OSError as exc:
                if exc.errno not in _SPACE_ERRNOS:
                    raise
                self._delete_on_full_filesystem(image_id, driver_has, trash)
            else:
                _fsync_dir(self._graph)
                try:
                    if driver_has:
                        self.driver.remove(image_id, force=True)
                except BaseException:
                    os.rename(trash, self.image_root(image_id))
                    raise
                remove_tree_quietly(trash, _log.warning)
            self._drop_lock_file(image_id)
        with self._retained_lock:
            self._retained.pop(image_id, None)

    def _delete_on_full_filesystem(self, image_id: str, driver_has: bool, trash: Path) -> None:
        """Delete an image when even a rename needs space (copy-on-write filesystems: btrfs, zfs).

        The layer goes first, which frees space (a zfs destroy or btrfs
        subvolume delete works on a full filesystem); while it is gone and the
        metadata not yet, the image is not whole and so invisible.  If the
        layer cannot be removed, the image stays exactly as it was.  Call with
        the image's lock held.
        """
        if driver_has:
            self.driver.remove(image_id, force=True)
        try:
            os.rename(self.image_root(image_id), trash)
        except OSError:
            remove_tree_quietly(self.image_root(image_id), _log.warning)
            return
        remove_tree_quietly(trash, _log.warning)

    def set_digest(self, name: str, digest: str) -> None:
        """Record `digest` (``sha256:<hex>``) as the image's layer digest."""
        image_id = self.resolve(name)
        algo, _, hexpart = digest.partition(":")
        if not algo or not hexpart:
            raise LayerStoreError(f"invalid digest {digest!r}: expected algorithm:hex, e.g. sha256:...")
        with self._locked(image_id):
            _write_atomic(self.image_root(image_id) / DIGEST_FILE, digest.encode())

    def get_digest(self, name: str) -> str:
        """The recorded layer digest (``sha256:<hex>`` of the uncompressed tar); `DigestNotSet` if none."""
        image_id = self.resolve(name)
        return self._digest_of(image_id, required=True) or ""

    def _digest_of(self, image_id: str, *, required: bool) -> str | None:
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

    # -- export ------------------------------------------------------------------

    def tar_layer(self, image: Image | str) -> BinaryIO:
        """A stream of the image's layer tar: exactly the bytes that were imported.

        Rebuilt from ``tar-data.json.gz`` and the files in the driver; a file
        whose content changed raises `DigestMismatch` naming it (while
        reading).  Only when that metadata is missing does it fall back to the
        driver's ``diff``.  Close the stream: that releases the mount.
        """
        return self._open_layer(image, verify=True)

    def write_layer(
        self,
        image: Image | str,
        out: BinaryIO | int,
        progress: Callable[[int], object] | None = None,
        *,
        name: str | None = None,
    ) -> int:
        """Write the image's layer tar (the bytes of `tar_layer`) to `out`, a binary file or a descriptor.

        Returns the number of bytes written.  Faster than copying `tar_layer`
        by hand: blocks go to the descriptor as they are rebuilt, without being
        copied, and a pipe is widened to 1 MiB first.  ``progress(n)`` is
        called after each block.  Raises what reading `tar_layer` raises
        (`DigestMismatch` naming a changed file, ...); by then part of the tar
        may have been written.  An `OSError` of writing to `out` names `name`
        (the output as the user knows it) as its ``filename``.
        """
        from .fdwrite import write_stream

        with contextlib.closing(self.tar_layer(image)) as stream:
            return write_stream(stream, out, progress, name=name)

    def _open_layer(self, image: Image | str, *, verify: bool) -> BinaryIO:
        from .tarsplit import assemble

        img = image if isinstance(image, Image) else self.get(image)
        try:
            meta = open(self.image_root(img.id) / TAR_DATA_FILE, "rb")  # noqa: SIM115 -- closed by the stream
        except FileNotFoundError:
            return self.driver.diff(img.id, img.parent)
        closers: list[Callable[[], object]] = [meta.close]
        try:
            expected = self._digest_of(img.id, required=False) if verify else None
            root = self.driver.get(img.id)
            try:
                root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except BaseException:
                self.driver.put(img.id)
                raise

            def release() -> None:
                try:
                    os.close(root_fd)  # before put: an open directory would keep the mount busy
                finally:
                    self.driver.put(img.id)

            closers.append(release)
            stream = assemble(meta, _layer_file_opener(img.id, root_fd))
        except BaseException:
            for closer in reversed(closers):
                with contextlib.suppress(Exception):
                    closer()
            raise
        return cast(BinaryIO, _LayerStream(img.id, stream, closers, expected))

    def temp_layer_archive(self, name: str, progress: Callable[[int], object] | None = None) -> BinaryIO:
        """Copy the image's layer tar into an anonymous temporary file in the store and return it (at offset 0).

        `progress`, when given, is called with the number of bytes of each
        chunk copied.  The file disappears when closed.
        """
        image = self.get(name)
        tmp = tempfile.TemporaryFile(dir=self._tmp)  # noqa: SIM115 -- returned to the caller
        try:
            with contextlib.closing(self.tar_layer(image)) as src:
                while chunk := src.read(_CHUNK):
                    tmp.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            tmp.flush()
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return cast(BinaryIO, tmp)

    # -- maintenance -------------------------------------------------------------

    def check(self, progress: Callable[[int], object] | None = None) -> Iterator[CheckResult]:
        """Reassemble every layer and compare its sha256 with the recorded digest; yield one result per layer."""
        for image_id in self.ids():
            yield self._check_one(image_id, progress)

    def _check_one(self, image_id: str, progress: Callable[[int], object] | None) -> CheckResult:
        try:
            image = self._load(image_id)
            expected = self._digest_of(image_id, required=False)
            if not (self.image_root(image_id) / TAR_DATA_FILE).exists():
                if expected is None:
                    return CheckResult(image_id, True, "no layer data recorded (empty image)")
                return CheckResult(image_id, False, "tar-split metadata is missing: cannot reassemble", expected)
            digest = hashlib.sha256()
            with contextlib.closing(self._open_layer(image, verify=False)) as stream:
                layer_stream = stream if isinstance(stream, _LayerStream) else None  # it hashes for itself
                read = layer_stream.read1 if layer_stream is not None else stream.read
                while chunk := read(_CHUNK):
                    if layer_stream is None:
                        digest.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
            actual = (
                layer_stream.digest
                if layer_stream is not None and layer_stream.digest
                else ("sha256:" + digest.hexdigest())
            )
        except (DigestMismatch, CorruptMetadata, InvalidArchive) as exc:
            return CheckResult(image_id, False, str(exc) or type(exc).__name__)
        except (LayerStoreError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
                reason = f"no space left on {exc.filename or self.root}"
            return CheckResult(image_id, False, f"could not verify: {reason}", unverified=True)
        if expected is None:
            return CheckResult(image_id, True, "reassembled; no digest recorded to compare", None, actual)
        if actual != expected:
            return CheckResult(
                image_id, False, f"digest mismatch: reassembled {actual}, recorded {expected}", expected, actual
            )
        return CheckResult(image_id, True, "ok", expected, actual)

    def gc(self) -> GCReport:
        """Remove leftovers of killed processes: staging entries, driver layers without metadata, stale
        references, and whatever the driver's own ``gc`` hook collects (`layerstore.Driver.gc`).

        Driver layers are found through the staging journal and by looking
        for image-ID names under the driver's home; a layer whose image is
        being registered right now (its lock is held) is left alone.
        """
        staging = self._sweep_staging()
        released = tuple(i for i in self.ids() if self.driver.release_stale(i))
        candidates = sorted(c for c in self._driver_id_names() if not self._has_metadata(c))
        removed: list[str] = []
        pending = [c for c in candidates if self.driver.exists(c)]
        while pending:
            progress = False
            still = []
            for layer_id in pending:
                with self._locked(layer_id, blocking=False) as got:
                    if not got or self._has_metadata(layer_id):
                        continue
                    try:
                        self.driver.remove(layer_id, force=True)
                    except LayerNotFound:
                        continue  # removed meanwhile by the `rm` that had renamed its metadata away
                    except LayerInUse:
                        still.append(layer_id)  # an orphan child still stands on it
                        continue
                    removed.append(layer_id)
                    progress = True
            if not progress:
                break
            pending = still
        driver_removed = self.driver.gc(live_ids=self._metadata_ids())
        return GCReport(tuple(removed), tuple(staging), released, tuple(driver_removed), tuple(self._sweep_locks()))

    def orphans(self) -> list[str]:
        """Describe the driver's leftovers that `gc` would remove (for `check`), without changing anything."""
        return self.driver.orphans()

    def _sweep_locks(self) -> list[str]:
        """Remove lock files of images that do not exist and that no process holds."""
        try:
            names = sorted(os.listdir(self._locks))
        except FileNotFoundError:
            return []
        busy = {entry.split(".", 1)[0] for entry in os.listdir(self._tmp)} if self._tmp.is_dir() else set()
        removed = []
        for name in names:
            if name in busy or self._has_metadata(name):
                continue
            with self._locked(name, blocking=False) as got:
                if not got or self._has_metadata(name) or (is_valid_id(name) and self.driver.exists(name)):
                    continue
                self._drop_lock_file(name)
                removed.append(name)
        return removed

    def _driver_id_names(self, max_depth: int = 3) -> set[str]:
        found: set[str] = set()
        home = self.driver.home

        def walk(path: Path, depth: int) -> None:
            try:
                entries = list(os.scandir(path))
            except OSError:
                return
            for entry in entries:
                if entry.name == ".layerstore":
                    continue
                if is_valid_id(entry.name):
                    found.add(entry.name)
                elif depth < max_depth and entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), depth + 1)

        walk(home, 1)
        return found
