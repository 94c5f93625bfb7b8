"""`Graph`: the image store proper: resolving names, reading, registering, deleting and retaining images.

Files and locks are `ImageFiles`' business (`layerstore.graph.files`), the
two atomic changes live in `layerstore.graph.transaction`, and `check`/`gc`
in `layerstore.graph.maintenance`; `Graph` ties them to one driver.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..errors import ImageNotFound, InvalidID, LayerInUse
from ..idtools import IDMap, IDMappings
from ..image import Image, format_created, generate_id, go_architecture, validate_id
from .files import DIGEST_FILE, SEAL_FILE, TAR_DATA_FILE, ImageFiles, write_atomic
from .reader import ImageReader
from .retain import RetainSessions
from .seal import is_sealed
from .staging import sweep_staging
from .transaction import delete_locked, register_locked

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from ..drivers import Driver
    from .maintenance import CheckResult, GCReport

__all__ = ["Graph"]

_CHUNK = 1 << 20


class Graph(ImageReader):
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
        self.id_maps = IDMappings(tuple(uid_maps), tuple(gid_maps))
        super().__init__(ImageFiles(self.root, self.id_maps), driver)
        self._sessions = RetainSessions()
        sweep_staging(self.files, driver)

    def __repr__(self) -> str:
        return f"<Graph {self.root} driver={self.driver.name}>"

    @property
    def tmp_dir(self) -> Path:
        """The store's directory of temporary files (on the store's filesystem; swept when a store opens)."""
        return self.files.tmp

    @property
    def output_journal(self) -> Path:
        """Where commands record temporary output files (see `layerstore.outfile.open_output`)."""
        return self.files.tmp

    def _locked(
        self, image_id: str, *, shared: bool = False, blocking: bool = True
    ) -> contextlib.AbstractContextManager[bool]:
        return self.files.locked(image_id, shared=shared, blocking=blocking)

    # -- retain sessions (pulls and builds in progress) -----------------------

    def retain(self, session_id: str, *layer_ids: str) -> None:
        """Hold `layer_ids` for `session_id` so that `delete` refuses them until `release`."""
        self._sessions.retain(session_id, layer_ids)

    def release(self, session_id: str, *layer_ids: str) -> None:
        """Drop the holds of `session_id` on `layer_ids` (unknown ones are ignored)."""
        self._sessions.release(session_id, layer_ids)

    def is_held(self, layer_id: str) -> bool:
        """True while some session retains `layer_id`."""
        return self._sessions.is_held(layer_id)

    # -- writing ---------------------------------------------------------------

    def create(
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
        self, image: Image, layer_data: BinaryIO | None, *, storage_opts: Mapping[str, str] | None = None,
        check: Callable[[str], None] | None = None,
    ) -> bool:
        """Store `image` with its layer read from `layer_data` (plain, gzip, bzip2, xz or zstd tar).

        `storage_opts` are per-layer driver options (``{"size": "10G"}``: a
        quota on btrfs and zfs); a driver that does not know one refuses it
        (`ConfigError`) and nothing is stored.  `check` is called with the
        layer's digest (``sha256:…``) after the layer is written and before
        the image becomes visible, so that no other process ever sees a layer
        that fails it; what it raises discards the layer and is re-raised.

        Returns True when this call stored the image and False when it
        already existed (a no-op, also across processes).  Atomic: on any
        failure, interruption included, the driver layer and the staging
        directory are removed and the error re-raised; nothing is visible.
        `image.size` is set to the layer size.
        """
        image_id = validate_id(image.id)
        with self.files.locked(image_id):
            if self._is_whole(image_id):
                return False
            with contextlib.ExitStack() as stack:
                if image.parent is not None:
                    stack.enter_context(self.files.locked(image.parent, shared=True))
                    if not self._is_whole(image.parent):
                        raise ImageNotFound(f"parent image {image.parent} of {image_id} is not in the store")
                register_locked(self.files, self.driver, image, layer_data, storage_opts or {}, check)
        return True

    def delete(self, name: str, force: bool = False) -> None:
        """Remove an image atomically: its metadata disappears at once, then its layer.

        Refuses (`LayerInUse`) an image that other images are built on (even
        with `force`: their layers depend on it; delete them first), and,
        unless `force`, one that a session retains or that is mounted.
        """
        image_id = self.resolve(name)
        with self.files.locked(image_id):
            if not self.files.has_metadata(image_id):
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
            delete_locked(self.files, self.driver, image_id, driver_has=driver_has, force=force)
        self._sessions.forget(image_id)

    def set_digest(self, name: str, digest: str) -> None:
        """Record `digest` (``sha256:<hex>``) as the image's layer digest."""
        image_id = self.resolve(name)
        algo, _, hexpart = digest.partition(":")
        if not algo or not hexpart:
            raise InvalidID(f"invalid digest {digest!r}: expected algorithm:hex, e.g. sha256:...")
        with self.files.locked(image_id):
            write_atomic(self.image_root(image_id) / DIGEST_FILE, digest.encode())

    def get_digest(self, name: str) -> str:
        """The recorded layer digest (``sha256:<hex>`` of the uncompressed tar); `DigestNotSet` if none."""
        return self.files.digest(self.resolve(name), required=True) or ""

    # -- export ------------------------------------------------------------------

    def tar_layer(self, image: Image | str) -> BinaryIO:
        """A stream of the image's layer tar: exactly the bytes that were imported.

        Rebuilt from ``tar-data.json.gz`` and the files in the driver; a file
        whose size or CRC-64 changed raises `DigestMismatch` naming it (while
        reading).  When the metadata is not provably the one the import
        recorded (see `layerstore.graph.seal`), the whole tar is hashed too and
        a sha256 that differs from the recorded digest raises `DigestMismatch`
        at the end.  Only when that metadata is missing does it fall back to
        the driver's ``diff``.  Close the stream: that releases the mount.
        """
        img = image if isinstance(image, Image) else self.get(image)
        root = self.image_root(img.id)
        try:
            meta = open(root / TAR_DATA_FILE, "rb")  # noqa: SIM115 -- closed by the stream
        except FileNotFoundError:
            return self.driver.diff(img.id, img.parent)
        try:
            expected = self.files.digest(img.id, required=False)
            sealed = expected is not None and is_sealed(root / SEAL_FILE, meta, expected)
        except BaseException:
            meta.close()
            raise
        from ..tarsplit.layerstream import open_layer  # the export side, imported by the commands that read

        return cast(BinaryIO, open_layer(img.id, meta, self.driver, expected, hashed=not sealed))

    def tar_size(self, image: Image | str) -> int:
        """The size in bytes of the image's layer tar (what `tar_layer` gives), without reading the layer's files.

        It is the sum of the tar-split metadata's raw segments and recorded
        file sizes, which is what a reassembly writes (or fails).  A layer
        without that metadata is read through `tar_layer` and counted.
        """
        img = image if isinstance(image, Image) else self.get(image)
        try:
            meta = open(self.image_root(img.id) / TAR_DATA_FILE, "rb")  # noqa: SIM115 -- closed below
        except FileNotFoundError:
            size = 0
            with contextlib.closing(self.tar_layer(img)) as tar:
                while chunk := tar.read(_CHUNK):
                    size += len(chunk)
            return size
        from ..tarsplit.format import EntryType, iter_records

        with meta:
            return sum(len(payload or b"") if kind == EntryType.SEGMENT else size
                       for kind, _name, size, payload, _position in iter_records(meta))

    def write_layer(
        self,
        image: Image | str,
        out: BinaryIO | int,
        progress: Callable[[int], object] | None = None,
        *,
        name: str | None = None,
    ) -> int:
        """Write the image's layer tar (the bytes of `tar_layer`) to `out`, a binary file or a descriptor.

        Returns the number of bytes written.  Blocks go to a descriptor as they
        are rebuilt, without being copied, and a pipe is widened to 1 MiB
        first.  ``progress(n)`` is called after each block.  Raises what
        reading `tar_layer` raises; by then part of the tar may have been
        written.  An `OSError` of writing to `out` names `name` (the output as
        the user knows it) as its ``filename``.
        """
        from ..fdwrite import write_stream

        with contextlib.closing(self.tar_layer(image)) as stream:
            return write_stream(stream, out, progress, name=name)

    def temp_layer_archive(self, name: str, progress: Callable[[int], object] | None = None) -> BinaryIO:
        """Copy the image's layer tar into an anonymous temporary file in the store and return it (at offset 0).

        `progress`, when given, is called with the number of bytes of each
        chunk copied.  The file disappears when closed.
        """
        image = self.get(name)
        import tempfile  # here: export and most commands need no temporary file

        tmp = tempfile.TemporaryFile(dir=self.files.tmp)  # noqa: SIM115 -- returned to the caller
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
        from .maintenance import check_layer

        for image_id in self.ids():
            yield check_layer(self.files, self.driver, image_id, progress)

    def gc(self) -> GCReport:
        """Remove leftovers of killed processes: staging entries, temporary files of replaced metadata files,
        driver layers without metadata, stale references, and whatever the driver's own ``gc`` hook collects
        (`layerstore.Driver.gc`).

        Orphan layers are the image-ID layers the driver facade knows
        (`layerstore.Driver.layers`) that have no metadata; a layer whose
        image is being registered right now (its lock is held) is left alone.
        """
        from .maintenance import collect_garbage

        return collect_garbage(self.files, self.driver, self.ids())

    def orphans(self) -> list[str]:
        """Describe the driver's leftovers that `gc` would remove (for `check`), without changing anything."""
        return self.driver.orphans()
