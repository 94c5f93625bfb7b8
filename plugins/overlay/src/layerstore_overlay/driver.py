"""The overlay storage driver's hooks: Docker's overlay2 layout on kernel overlayfs.

Layout under the driver home (as overlay2 has it)::

    <home>/<id>/diff      the layer's own files (the overlay upper directory)
    <home>/<id>/work      overlayfs work directory
    <home>/<id>/merged    where the layer is mounted
    <home>/<id>/link      the layer's short name, e.g. ``5VDE3TYTI7XH2JKHU3ZLW6PDSM``
    <home>/<id>/lower     the chain of short names below it, top-down: ``l/ABC:l/DEF``
    <home>/<id>/parent    the parent's ID (absent for a base layer)
    <home>/<id>/read-only present for a layer created read-only (mounted read-only)
    <home>/<id>/kids/<child-id>     one per child, holding the short name the child stacks on
    <home>/<id>/frozen-<short>      an earlier state of diff/ that older children still stack on
    <home>/<id>/aliases/<short>     another short name of a frozen state (names the frozen-* directory)
    <home>/<id>/copied-from         which frozen state diff/ was copied from, and when
    <home>/l/<short>      symlink to ``../<id>/diff`` (or to a frozen state)
    <home>/.staging/      layers being created, copies being made, probes (`layerstore.kit.ScratchArea`)
    <home>/.deleting/     layers and frozen states being deleted (renamed here first: the trash)
    <home>/mount-probe    what the last successful support probe found (`layerstore_overlay.probes`)

A layer appears with one rename out of .staging/ and disappears with one
rename into .deleting/; what a killed process leaves in either is swept by
the ``gc`` hook (and at start-up), never while its owner lives.

A layer without parent is not mounted at all: `get` returns its diff/
directory, as overlay2 does (unless it is read-only: then diff/ is
bind-mounted read-only at merged/).  How a parent with children is kept
from changing under them is `layerstore_overlay.links`' business.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerstore import hookimpl
from layerstore.capabilities import Capabilities
from layerstore.errors import (
    CorruptMetadata,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LimitExceeded,
)
from layerstore.kit import check_layer_id, check_options, check_storage_options

from . import _mount, probes
from ._create import OVERLAY_XATTR_PREFIXES, build_layer
from ._layout import LINK_DIR, RESERVED, STAGING_DIR, TRASH_DIR, Layout, dir_lock, make_dirs, read_text
from ._leftovers import Housekeeper, scratch_areas
from ._mount import CLASSIC_MAX_LOWERS, DEFAULT_MOUNT_OPTIONS, KERNEL_MAX_LOWERS, MountAPI
from .links import Freezer, Links
from .probes import PROBE_CACHE

if TYPE_CHECKING:
    from layerstore.capabilities import CreateOpts
    from layerstore.change import Change
    from layerstore.idtools import IDMappings

__all__ = ["DEFAULT_MOUNT_OPTIONS", "OPTIONS", "PROBE_CACHE", "OverlayDriver"]

OPTIONS: dict[str, str] = {
    "mountopt": "extra overlay mount options, comma-separated (e.g. volatile)",
    "mount_api": "auto (default), fsopen (new mount API, lowerdir+) or mount (classic mount(8))",
}
_log = logging.getLogger(__name__)


class OverlayDriver:
    """Layers as overlayfs upper directories stacked over their ancestors' ones.

    Constructed as ``OverlayDriver(home, options, id_maps)`` (the factory of
    the ``layerstore.drivers`` entry point ``overlay``).  Raises
    `DriverNotSupported` when overlayfs cannot work on `home` and
    `ConfigError` for unknown options.
    """

    hook_api_version = 1  # the layerstore hook API this driver implements

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        check_options("overlay", options, {"mountopt": None, "mount_api": ("auto", MountAPI.FSOPEN, MountAPI.CLASSIC)})
        self.home = str(Path(home).absolute())
        self.id_maps = id_maps
        self.mount_options = _mount.parse_mount_options(options.get("mountopt", ""))
        self.backing_fs = probes.check_support(self.home)
        self.layout = Layout(self.home)
        self.staging, self.trash = scratch_areas(self.home)
        make_dirs(self.home, (LINK_DIR, STAGING_DIR, TRASH_DIR))
        self.links = Links(self.layout)
        self.freezer = Freezer(self.links, self.staging, self.trash)
        self.housekeeper = Housekeeper(self.layout, self.freezer)
        wanted_api = options.get("mount_api", "auto")
        self.mount_api = probes.choose_mount_api(
            self.home, self.backing_fs, self.staging, wanted_api, _mount.overlay_options(wanted_api, self.mount_options)
        )
        self.max_lowers = KERNEL_MAX_LOWERS if self.mount_api == MountAPI.FSOPEN else CLASSIC_MAX_LOWERS
        self.housekeeper.sweep_quietly()

    def _require(self, layer_id: str) -> None:
        if not self.layout.exists(layer_id):
            raise LayerNotFound(f"layer {layer_id} does not exist in driver overlay ({self.home})")

    # -- creation and removal ------------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Native diff, ID maps, read-only layers; a chain is the layer itself plus up to 500 lower layers."""
        return Capabilities(native_diff=True, idmap=True, read_only_layers=True, max_depth=self.max_lowers + 1)

    @hookimpl
    def exists(self, id: str) -> bool:
        """True when the layer's directory (with diff/) exists."""
        return self.layout.exists(id)

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Build diff/, work/, merged/ and the records of layer `id` in staging, rename it into place, link it."""
        check_layer_id("overlay", id, RESERVED)
        check_storage_options("overlay", id, opts.storage_opts, ())
        if os.path.lexists(self.layout.dir(id)):
            raise LayerExists(f"layer {id} already exists in driver overlay")
        if parent is None:
            build_layer(self.links, self.staging, id, parent=None, lowers=[], opts=opts, id_maps=self.id_maps)
            return
        self._require(parent)
        # Shared: creates on one parent run together; a freeze or sweep of the parent waits.
        with dir_lock(self.layout.dir(parent), shared=True):
            parent_link = read_text(os.path.join(self.layout.dir(parent), "link"))
            if not parent_link:
                raise CorruptMetadata(
                    f"parent layer {parent} has no short name ({self.layout.dir(parent)}/link is missing); "
                    "recreate the parent layer"
                )
            lowers = [f"{LINK_DIR}/{parent_link}", *self.layout.lowers(parent)]
            if len(lowers) > self.max_lowers:
                raise LimitExceeded(
                    f"cannot create layer {id}: its chain would have {len(lowers)} lower layers; overlay "
                    f"({self.mount_api} mount) allows at most {self.max_lowers} (a chain of "
                    f"{self.max_lowers + 1} layers); flatten the image (export and re-import it as one layer)"
                )
            build_layer(self.links, self.staging, id, parent=parent, lowers=lowers, opts=opts, id_maps=self.id_maps)

    @hookimpl
    def remove(self, id: str) -> None:
        """Unmount, rename into the trash and delete layer `id`; `LayerInUse` if it has children."""
        self._require(id)
        layer = self.layout.dir(id)
        with dir_lock(layer):  # creates of children on it and freezes of it wait, or are done
            children = [kid for kid, _ in self.links.kids(id)]
            if children:
                raise LayerInUse(
                    f"layer {id} is the parent of {len(children)} layer(s) ({', '.join(children[:3])}); "
                    "remove the children first"
                )
            _mount.unmount(os.path.join(layer, "merged"))
            parent = self.layout.parent_of(id)
            shorts = self.links.shorts_of(id)
            self.trash.discard(layer, id)
        self.links.forget(id, parent, shorts)
        if parent is not None and self.layout.exists(parent):
            self.freezer.drop_unused(parent)

    # -- mounting --------------------------------------------------------------------------

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Mount layer `id` at merged/ (once) and return it; a base layer returns its diff/ unmounted."""
        self._require(id)
        layer = self.layout.dir(id)
        lowers = self.layout.lowers(id)
        read_only = os.path.exists(os.path.join(layer, "read-only"))
        merged = os.path.join(layer, "merged")
        if _mount.is_mounted(merged, os.path.join(layer, "diff")):
            return merged
        if not read_only:
            self.freezer.freeze(id)
        if not lowers and not read_only:
            return os.path.join(layer, "diff")
        if not lowers:
            _mount.bind_read_only(self.mount_api, os.path.join(layer, "diff"), merged)
            return merged
        if len(lowers) > self.max_lowers:
            raise LimitExceeded(
                f"layer {id} has {len(lowers)} lower layers; overlay ({self.mount_api} mount) mounts at most "
                f"{self.max_lowers}"
            )
        self.links.heal(id, lowers)
        options = _mount.overlay_options(self.mount_api, self.mount_options, mount_label)
        _mount.mount_overlay(
            self.mount_api,
            self.home,
            lowers,
            upper=f"{id}/diff",
            work=f"{id}/work",
            target=f"{id}/merged",
            options=options,
            read_only=read_only,
        )
        return merged

    @hookimpl
    def put(self, id: str) -> None:
        """Unmount layer `id` if it is mounted."""
        if not self.layout.valid(id):
            return
        merged = os.path.join(self.layout.dir(id), "merged")
        if _mount.is_mounted(merged, os.path.join(self.layout.dir(id), "diff")):
            _mount.unmount(merged)

    @hookimpl
    def diff_files(self, id: str) -> str:
        """diff/, the layer's own files (its upper directory), for reading without a mount or a freeze.

        A freeze replaces diff/ by its copy in one exchange, so whoever opens
        diff/ sees one whole state of it.
        """
        self._require(id)
        return os.path.join(self.layout.dir(id), "diff")

    # -- native diff -------------------------------------------------------------------------

    def _native_lowers(self, id: str, parent: str | None) -> list[str] | None:
        """The absolute lower dirs of `id` when the native diff applies (`parent` is its real parent)."""
        if parent != self.layout.parent_of(id):
            return None
        lowers = self.layout.lowers(id)
        self.links.heal(id, lowers)
        return [os.path.join(self.home, entry) for entry in lowers]

    @hookimpl
    def changes(self, id: str, parent: str | None) -> list[Change] | None:
        """Changes read from diff/: whiteouts are deletions, everything else added or modified."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        from . import _native  # here: the diff side, which most commands never use

        return _native.changes(os.path.join(self.layout.dir(id), "diff"), lowers, OVERLAY_XATTR_PREFIXES)

    @hookimpl
    def diff_size(self, id: str, parent: str | None) -> int | None:
        """Sum of the regular file sizes in diff/ (each inode once)."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        from . import _native

        return _native.diff_size(os.path.join(self.layout.dir(id), "diff"), lowers, OVERLAY_XATTR_PREFIXES)

    @hookimpl
    def diff(self, id: str, parent: str | None) -> BinaryIO | None:
        """A lazily generated tar of diff/ with kernel whiteouts turned into canonical ones."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        from layerstore.archive.export import GeneratedStream

        from . import _native

        diff = os.path.join(self.layout.dir(id), "diff")
        chunks = _native.tar_chunks(diff, lowers, OVERLAY_XATTR_PREFIXES, self.id_maps)
        return io.BufferedReader(GeneratedStream(chunks), buffer_size=1 << 16)

    @hookimpl
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int | None:
        """Extract a layer tar straight into diff/, whiteouts in the kernel's form."""
        self._require(id)
        if parent != self.layout.parent_of(id):
            return None
        self.freezer.freeze(id)
        # A base layer is never mounted (get returns diff/ itself), so kernel
        # whiteouts there would show as device files: delete instead.
        lowers = self.layout.lowers(id)
        fmt = "overlay" if lowers else "delete"
        diff = os.path.join(self.layout.dir(id), "diff")
        # Names resolve through the lower layers too (links there are followed inside the layer).
        lower_dirs = [os.path.join(self.home, entry) for entry in lowers]
        from layerstore.archive.apply import apply_tar  # here: exports and listings never extract

        size = apply_tar(stream, diff, id_maps=self.id_maps, whiteout_format=fmt, lowers=lower_dirs)
        if fmt == "overlay":
            from . import _native

            _native.drop_hidden_whiteouts(diff, OVERLAY_XATTR_PREFIXES)
        return int(size)

    # -- facts and housekeeping -----------------------------------------------------------

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Backing filesystem, d_type, layer count, native diff and the mount API in use."""
        api = "fsopen (new mount API, lowerdir+)" if self.mount_api == MountAPI.FSOPEN else "mount(8) (classic)"
        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", "true"),
            ("Mount API", api),
            ("Max Lower Layers", str(self.max_lowers)),
            ("Layers", str(len(self.layout.layer_ids()))),
            ("Mount Options", ",".join([*DEFAULT_MOUNT_OPTIONS, *self.mount_options])),
        ]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """LowerDir (resolved, top-down, colon-separated), UpperDir, WorkDir and MergedDir, like Docker."""
        self._require(id)
        layer = self.layout.dir(id)
        result = {
            "UpperDir": os.path.join(layer, "diff"),
            "WorkDir": os.path.join(layer, "work"),
            "MergedDir": os.path.join(layer, "merged"),
        }
        lowers = self.layout.lowers(id)
        if lowers:
            result["LowerDir"] = ":".join(os.path.realpath(os.path.join(self.home, e)) for e in lowers)
        return result

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete unheld staging/trash entries, frozen states no child needs, stale links and records."""
        return self.housekeeper.collect()

    @hookimpl
    def orphans(self) -> list[str]:
        """What `gc` would delete now, without deleting anything."""
        return self.housekeeper.describe()

    @hookimpl
    def cleanup(self) -> None:
        """Delete leftovers of interrupted removals.

        The facade has put every reference taken through it, which unmounted
        the layers nobody else holds; a layer still mounted is held by
        another process and stays mounted.
        """
        self.housekeeper.sweep_quietly()
