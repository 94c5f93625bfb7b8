"""The overlay storage driver: Docker's overlay2 layout on kernel overlayfs.

Layout under the driver home (as overlay2 has it)::

    <home>/<id>/diff      the layer's own files (the overlay upper directory)
    <home>/<id>/work      overlayfs work directory
    <home>/<id>/merged    where the layer is mounted
    <home>/<id>/link      the layer's short name, e.g. ``5VDE3TYTI7XH2JKHU3ZLW6PDSM``
    <home>/<id>/lower     the chain of short names below it, top-down: ``l/ABC:l/DEF``
    <home>/<id>/parent    the parent's ID (absent for a base layer)
    <home>/<id>/read-only present for a layer created read-only (mounted read-only)
    <home>/<id>/kids/<child-id>  one per child, holding the short name the child stacks on
    <home>/<id>/frozen-<short>  an earlier state of diff/ that older children still stack on
    <home>/l/<short>      symlink to ``../<id>/diff``
    <home>/mount-probe    what the last successful support probe found (see `OverlayDriver._probe`)

A layer without parent is not mounted at all: `get` returns its diff/
directory, as overlay2 does (unless it is read-only: then diff/ is
bind-mounted read-only at merged/).

A child must never see later changes to its parent.  Before a layer that
has children is mounted writable (or has a diff applied), its diff/ is
*frozen*: renamed to ``frozen-<short>`` (the children's link is pointed
there; mounted children keep the very same directory) and replaced by a
copy (``cp -a --reflink=auto``) under a new short name.  Read-only layers and
layers without children never pay for this.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerstore import hookimpl
from layerstore.archive.apply import apply_tar
from layerstore.archive.export import GeneratedStream
from layerstore.capabilities import Capabilities
from layerstore.errors import (
    CommandFailed,
    ConfigError,
    CorruptMetadata,
    DriverNotSupported,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    LayerStoreError,
    LimitExceeded,
)
from layerstore.flock import held_flock
from layerstore.fstree import remove_tree_quietly
from layerstore.kit import check_layer_id, check_options, check_storage_options, is_valid_layer_id
from layerstore.process import run_command
from layerstore.xattrs import get_xattr, list_xattrs

from . import _mount, _native, _support
from ._mount import CLASSIC_MAX_LOWERS, KERNEL_MAX_LOWERS, MountAPI, MountError

if TYPE_CHECKING:
    from layerstore.capabilities import CreateOpts
    from layerstore.change import Change
    from layerstore.idtools import IDMappings

__all__ = ["DEFAULT_MOUNT_OPTIONS", "OPTIONS", "OverlayDriver"]

LINK_DIR = "l"
_RESERVED = (LINK_DIR,)  # layer IDs the layout takes for itself
PROBE_CACHE = "mount-probe"
DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = ("redirect_dir=off", "metacopy=off", "index=off")
"""Renamed directories and metadata-only copy-ups would leave diff/ incomplete for the native diff."""
OPTIONS: dict[str, str] = {
    "mountopt": "extra overlay mount options, comma-separated (e.g. volatile)",
    "mount_api": "auto (default), fsopen (new mount API, lowerdir+) or mount (classic mount(8))",
}
_XATTR_PREFIXES = ("trusted.overlay.",)
_DIRECTORY_OPTIONS = frozenset({"upperdir", "lowerdir", "workdir", "lowerdir+", "datadir+"})
FROZEN_PREFIX = "frozen-"
KIDS_DIR = "kids"
_SHORT_LEN = 26
_log = logging.getLogger(__name__)
_STALE_STAGING = 3600.0  # seconds after which a staging dir is surely a crashed create's leftover


@contextlib.contextmanager
def _dir_lock(path: str, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on the directory `path` (the inode: it stays locked across renames).

    Yields False instead of waiting when `blocking` is False and another holds it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with held_flock(fd, blocking=blocking) as got:
            yield got
    finally:
        os.close(fd)


def _short_name() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")[:_SHORT_LEN]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


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
        self.mount_options = [o.strip() for o in options.get("mountopt", "").split(",") if o.strip()]
        named = sorted({o.partition("=")[0] for o in self.mount_options} & _DIRECTORY_OPTIONS)
        if named:
            raise ConfigError(
                f"overlay driver option mountopt must not name directories ({', '.join(named)}): the driver "
                "chooses each layer's directories inside the store; remove them from mountopt"
            )
        wanted_api = options.get("mount_api", "auto")
        if os.geteuid() != 0:
            raise DriverNotSupported("overlay needs root (CAP_SYS_ADMIN) to mount")
        if not _support.kernel_has_overlay():
            raise DriverNotSupported("the kernel has no overlay filesystem (not in /proc/filesystems)")
        os.makedirs(self.home, mode=0o711, exist_ok=True)
        if _support.filesystem_magic(self.home) == _support.OVERLAY_MAGIC:
            raise DriverNotSupported(f"{self.home} is on overlayfs itself; put the store on another filesystem")
        self.backing_fs = _support.backing_fs(self.home)
        os.makedirs(os.path.join(self.home, LINK_DIR), mode=0o700, exist_ok=True)
        self.mount_api = self._probe(wanted_api)
        self.max_lowers = KERNEL_MAX_LOWERS if self.mount_api == MountAPI.FSOPEN else CLASSIC_MAX_LOWERS
        self.native_diff = True
        self._remove_leftovers()

    # -- support detection -------------------------------------------------

    def _probe(self, wanted_api: str) -> str:
        """Return the mount API that works on this home: remembered, or found by `_probe_mount`.

        A successful probe is remembered in ``<home>/mount-probe`` together with
        everything it depends on (kernel release, backing filesystem and its
        device, requested API, mount options), so that later opens of the same
        home skip the test mount; any difference probes again.  Failures are
        never remembered.
        """
        key = "\t".join(
            [os.uname().release, self.backing_fs, str(os.stat(self.home).st_dev), wanted_api, *self.mount_options]
        )
        cache = os.path.join(self.home, PROBE_CACHE)
        with contextlib.suppress(OSError, UnicodeDecodeError):
            cached_key, _, cached_api = (_read(cache) or "").rpartition("\n")
            if cached_key == key and (
                cached_api == MountAPI.CLASSIC or (cached_api == MountAPI.FSOPEN and _mount.new_api_available())
            ):
                return cached_api
        api = self._probe_mount(wanted_api)
        with contextlib.suppress(OSError):
            tmp = f"{cache}.tmp-{secrets.token_hex(4)}"
            _write(tmp, f"{key}\n{api}")
            os.replace(tmp, cache)
        return api

    def _probe_mount(self, wanted_api: str) -> str:
        """Check d_type and trusted xattrs and mount a test overlay; return the mount API that works."""
        probe = os.path.join(self.home, f".probe-{secrets.token_hex(6)}")
        os.mkdir(probe, 0o700)
        try:
            problem = _support.dtype_problem(probe)
            if problem is not None:
                raise DriverNotSupported(f"overlay cannot use {self.home} ({self.backing_fs}): {problem}")
            try:
                os.setxattr(probe, "trusted.layerstore-probe", b"1")
                if get_xattr(probe, "trusted.layerstore-probe") != b"1":
                    raise OSError(errno.EIO, "trusted xattr read back wrong")
            except OSError as exc:
                raise DriverNotSupported(
                    f"overlay needs trusted.* xattrs on {self.home} ({self.backing_fs}): {exc.strerror}"
                ) from None
            for d in ("lower1", "lower2", "upper", "work", "merged"):
                os.mkdir(os.path.join(probe, d))
            _write(os.path.join(probe, "lower2", "probe"), "ok")
            candidates = [wanted_api] if wanted_api != "auto" else [MountAPI.FSOPEN, MountAPI.CLASSIC]
            errors = []
            for api in candidates:
                if api == MountAPI.FSOPEN and not _mount.new_api_available():
                    errors.append("fsopen: the new mount API is not available here")
                    continue
                rel = os.path.basename(probe)
                options = [*DEFAULT_MOUNT_OPTIONS, *self.mount_options]
                # A volatile test mount does not sync the whole backing filesystem
                # when it is unmounted (kernels >= 5.10; older ones get a plain retry).
                attempts = [[*options, "volatile"], options] if "volatile" not in options else [options]
                failure: Exception | None = None
                for attempt in attempts:
                    try:
                        _mount.mount_overlay(
                            api,
                            self.home,
                            [f"{rel}/lower1", f"{rel}/lower2"],
                            upper=f"{rel}/upper",
                            work=f"{rel}/work",
                            target=f"{rel}/merged",
                            options=attempt,
                        )
                    except (MountError, LayerStoreError) as exc:
                        failure = exc
                        continue
                    failure = None
                    break
                if failure is not None:
                    errors.append(f"{api}: {failure}")
                    continue
                try:
                    seen = _read(os.path.join(probe, "merged", "probe"))
                finally:
                    _mount.unmount(os.path.join(probe, "merged"))
                if seen == "ok":
                    return api
                errors.append(f"{api}: the test mount did not show the lower layer")
            raise DriverNotSupported(f"a test overlay mount under {self.home} failed: {'; '.join(errors)}")
        finally:
            with contextlib.suppress(OSError):
                _mount.unmount(os.path.join(probe, "merged"))
            remove_tree_quietly(probe, _log.warning)

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Delete staging and trash directories that killed processes left."""
        self._remove_leftovers()
        return []

    def _remove_leftovers(self) -> None:
        """Delete staging and trash directories of dead processes; never raises (a failure is a warning).

        ``.tmp-*`` (staging) and ``.trash-*`` directories are flocked by their
        owner from the moment they have that name, so a free lock means the
        owner is gone.  ``.new-*`` (a staging directory in the instant before it
        is locked) and ``.probe-*`` are removed only when old.
        """
        now = time.time()
        try:
            with os.scandir(self.home) as it:
                names = [e.name for e in it if e.name.startswith((".trash-", ".tmp-", ".new-", ".probe-"))]
        except OSError as exc:
            _log.warning("could not list %s: %s", self.home, exc.strerror or exc)
            return
        for name in names:
            path = os.path.join(self.home, name)
            if name.startswith((".new-", ".probe-")):
                with contextlib.suppress(OSError):
                    if now - os.lstat(path).st_mtime > _STALE_STAGING:
                        remove_tree_quietly(path, _log.warning)
                continue
            try:
                with _dir_lock(path, blocking=False) as got:
                    if got:
                        remove_tree_quietly(path, _log.warning)
            except FileNotFoundError:
                continue  # its owner finished meanwhile
            except OSError as exc:
                _log.warning("could not remove leftover %s: %s", path, exc.strerror or exc)

    # -- layout helpers ----------------------------------------------------

    def _dir(self, layer_id: str) -> str:
        return os.path.join(self.home, layer_id)

    def _valid(self, layer_id: str) -> bool:
        return is_valid_layer_id(layer_id, _RESERVED)

    def _parent_of(self, layer_id: str) -> str | None:
        return _read(os.path.join(self._dir(layer_id), "parent")) or None

    def _lowers(self, layer_id: str) -> list[str]:
        text = _read(os.path.join(self._dir(layer_id), "lower"))
        return text.split(":") if text else []

    def _require(self, layer_id: str) -> None:
        if not self.exists(layer_id):
            raise LayerNotFound(f"layer {layer_id} does not exist in driver overlay ({self.home})")

    def _layer_ids(self) -> list[str]:
        with os.scandir(self.home) as it:
            return sorted(e.name for e in it if self._valid(e.name) and os.path.isdir(os.path.join(e.path, "diff")))

    # -- hooks -------------------------------------------------------------

    @hookimpl
    def capabilities(self) -> Capabilities:
        """Native diff, ID maps, read-only layers; a chain is the layer itself plus up to 500 lower layers."""
        return Capabilities(
            native_diff=self.native_diff, idmap=True, read_only_layers=True, max_depth=self.max_lowers + 1
        )

    @hookimpl
    def exists(self, id: str) -> bool:
        """True when the layer's directory (with diff/) exists."""
        return self._valid(id) and os.path.isdir(os.path.join(self._dir(id), "diff"))

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create diff/, work/, merged/, the short link and the lower chain of layer `id`."""
        check_layer_id("overlay", id, _RESERVED)
        check_storage_options("overlay", id, opts.storage_opts, ())
        if os.path.lexists(self._dir(id)):
            raise LayerExists(f"layer {id} already exists in driver overlay")
        lowers: list[str] = []
        if parent is not None:
            self._require(parent)
            parent_link = _read(os.path.join(self._dir(parent), "link"))
            if not parent_link:
                raise CorruptMetadata(
                    f"parent layer {parent} has no short name ({self._dir(parent)}/link is missing); "
                    "recreate the parent layer"
                )
            lowers = [f"{LINK_DIR}/{parent_link}", *self._lowers(parent)]
            if len(lowers) > self.max_lowers:
                raise LimitExceeded(
                    f"cannot create layer {id}: its chain would have {len(lowers)} lower layers; overlay "
                    f"({self.mount_api} mount) allows at most {self.max_lowers} (a chain of "
                    f"{self.max_lowers + 1} layers); flatten the image (export and re-import it as one layer)"
                )
        token = secrets.token_hex(8)
        staging = os.path.join(self.home, f".tmp-{token}")
        link_path = ""
        kid_entry = ""
        stack = contextlib.ExitStack()
        try:
            # Locked before it gets the name the sweep looks at.
            unlocked = os.path.join(self.home, f".new-{token}")
            os.mkdir(unlocked, 0o700)
            stack.enter_context(_dir_lock(unlocked))
            os.rename(unlocked, staging)
            diff = os.path.join(staging, "diff")
            if parent is None:
                uid, gid = self.id_maps.root_pair
                os.mkdir(diff, 0o755)
                os.chown(diff, uid, gid)
                os.chmod(diff, 0o755)  # a layer root is 0755 by contract, whatever the umask
            else:
                self._copy_root(os.path.join(self._dir(parent), "diff"), diff)
            os.mkdir(os.path.join(staging, "work"), 0o700)
            os.mkdir(os.path.join(staging, "merged"), 0o700)
            while True:
                short = _short_name()
                link_path = os.path.join(self.home, LINK_DIR, short)
                try:
                    os.symlink(f"../{id}/diff", link_path)
                    break
                except FileExistsError:
                    continue
            _write(os.path.join(staging, "link"), short)
            if opts.read_only:
                _write(os.path.join(staging, "read-only"), "")
            if parent is not None:
                _write(os.path.join(staging, "lower"), ":".join(lowers))
                _write(os.path.join(staging, "parent"), parent)
                # Registered before the layer appears, so a crash never leaves a child its parent does not know.
                kids = os.path.join(self._dir(parent), KIDS_DIR)
                os.makedirs(kids, mode=0o700, exist_ok=True)
                kid_entry = os.path.join(kids, id)
                _write(kid_entry, lowers[0].rpartition("/")[2])
            try:
                os.rename(staging, self._dir(id))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise LayerExists(f"layer {id} already exists in driver overlay") from None
                raise
        except BaseException:
            if kid_entry and not (self.exists(id) and self._parent_of(id) == parent):
                with contextlib.suppress(OSError):
                    os.unlink(kid_entry)
            if link_path:
                with contextlib.suppress(OSError):
                    os.unlink(link_path)
            remove_tree_quietly(staging, _log.warning)
            raise
        finally:
            stack.close()

    def _copy_root(self, source: str, dest: str) -> None:
        """Make `dest` a directory with the mode, owner and xattrs of `source` (the parent's root)."""
        st = os.lstat(source)
        os.mkdir(dest, 0o700)
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, st.st_mode & 0o7777)
        for name in list_xattrs(source):
            if name.startswith(_XATTR_PREFIXES) or name.startswith("user.overlay."):
                continue
            with contextlib.suppress(OSError):
                os.setxattr(dest, name, get_xattr(source, name), follow_symlinks=False)

    @hookimpl
    def remove(self, id: str) -> None:
        """Unmount, hide (rename to a trash name) and delete layer `id`; `LayerInUse` if it has children."""
        self._require(id)
        children = [kid for kid, _ in self._kids(id)]
        if children:
            raise LayerInUse(
                f"layer {id} is the parent of {len(children)} layer(s) ({', '.join(children[:3])}); "
                "remove the children first"
            )
        layer = self._dir(id)
        _mount.unmount(os.path.join(layer, "merged"))
        shorts = {name: _read(os.path.join(layer, "link")) or "" for name in ("diff",)}
        with os.scandir(layer) as it:
            shorts.update({e.name: e.name[len(FROZEN_PREFIX) :] for e in it if e.name.startswith(FROZEN_PREFIX)})
        parent = self._parent_of(id)
        trash = os.path.join(self.home, f".trash-{secrets.token_hex(8)}")
        with _dir_lock(layer):  # held from before the trash name exists until it is gone
            os.rename(layer, trash)
            self._forget_removed(id, parent, shorts)
            # The layer is gone once renamed; files that resist are a leftover for the sweeps, not a failure.
            remove_tree_quietly(trash, _log.warning)
        if parent is not None and self.exists(parent):
            self._drop_unused_frozen(parent)

    def _drop_unused_frozen(self, id: str) -> None:
        """Delete the frozen states of `id`'s diff/ that no child stacks on any more (and their short links)."""
        layer = self._dir(id)
        used = {short for _, short in self._kids(id)}
        try:
            with os.scandir(layer) as it:
                frozen = [e.name for e in it if e.name.startswith(FROZEN_PREFIX)]
        except FileNotFoundError:
            return
        for name in frozen:
            short = name[len(FROZEN_PREFIX) :]
            if short in used:
                continue
            link_path = os.path.join(self.home, LINK_DIR, short)
            with contextlib.suppress(OSError):
                if os.readlink(link_path) == f"../{id}/{name}":
                    os.unlink(link_path)
            trash = os.path.join(self.home, f".trash-{secrets.token_hex(8)}")
            try:
                with _dir_lock(os.path.join(layer, name)):
                    os.rename(os.path.join(layer, name), trash)
                    remove_tree_quietly(trash, _log.warning)
            except OSError as exc:
                _log.warning("could not remove the unused frozen copy %s/%s: %s", layer, name, exc.strerror or exc)

    def _forget_removed(self, id: str, parent: str | None, shorts: dict[str, str]) -> None:
        """Drop the kids entry and the short links of layer `id`, just renamed away."""
        if parent is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._dir(parent), KIDS_DIR, id))
        for name, short in shorts.items():
            if not short:
                continue
            link_path = os.path.join(self.home, LINK_DIR, short)
            with contextlib.suppress(OSError):
                if os.readlink(link_path) == f"../{id}/{name}":
                    os.unlink(link_path)

    def _heal_links(self, id: str, lowers: list[str]) -> None:
        """Recreate missing ``l/<short>`` links of the chain below `id` from each layer's ``link`` file."""
        chain: list[str] | None = None
        for index, entry in enumerate(lowers):
            link_path = os.path.join(self.home, entry)
            if os.path.isdir(link_path):
                continue
            if chain is None:
                chain = []
                current = self._parent_of(id)
                while current is not None and len(chain) < len(lowers):
                    chain.append(current)
                    current = self._parent_of(current)
            short = entry.rpartition("/")[2]
            if index >= len(chain) or not self.exists(chain[index]):
                raise CorruptMetadata(
                    f"layer {id}: lower layer {entry} is missing and its layer cannot be found through the "
                    f"parent files ({self._dir(id)}/lower vs parent chain); remove layer {id} and re-import it"
                )
            owner = chain[index]
            link_file = os.path.join(self._dir(owner), "link")
            recorded = _read(link_file)
            target = f"../{owner}/diff"
            if os.path.isdir(os.path.join(self._dir(owner), FROZEN_PREFIX + short)):
                recorded, target = short, f"../{owner}/{FROZEN_PREFIX}{short}"
            if recorded is None:
                raise CorruptMetadata(
                    f"layer {owner}: both its short-name file {link_file} and its link {link_path} are "
                    f"missing; restore them with: printf %s {short} > {link_file}  (the name comes from "
                    f"{self._dir(id)}/lower), then mount again"
                )
            if recorded != short:
                raise CorruptMetadata(
                    f"layer {owner}: {link_file} says {recorded!r} but {self._dir(id)}/lower expects {short!r}; "
                    f"write {short} into {link_file} (or remove layer {id} and re-import it)"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link_path)  # a dangling or wrong link
            with contextlib.suppress(FileExistsError):
                os.symlink(target, link_path)

    def _new_link(self, target: str) -> str:
        """Create ``l/<new short name>`` pointing at `target`; return the name."""
        while True:
            short = _short_name()
            try:
                os.symlink(target, os.path.join(self.home, LINK_DIR, short))
            except FileExistsError:
                continue
            return short

    def _kids(self, id: str) -> list[tuple[str, str]]:
        """The children of `id` (verified: they exist and name `id` as parent) with the short name each uses."""
        try:
            with os.scandir(os.path.join(self._dir(id), KIDS_DIR)) as it:
                entries = [(e.name, e.path) for e in it]
        except FileNotFoundError:
            return []
        kids = []
        for kid, path in sorted(entries):
            if self.exists(kid) and self._parent_of(kid) == id:
                kids.append((kid, _read(path) or ""))
        return kids

    def _freeze(self, id: str) -> None:
        """Keep the current diff/ of `id` for its children and give the layer a copy to change."""
        layer = self._dir(id)
        old = _read(os.path.join(layer, "link"))
        if not old or not any(short == old for _, short in self._kids(id)):
            return
        diff = os.path.join(layer, "diff")
        # Copies of a freeze that was killed (the caller holds this layer's lock: none is in progress).
        with os.scandir(layer) as it:
            for stale in [e.path for e in it if e.name.startswith(".diff-copy-")]:
                remove_tree_quietly(stale, _log.warning)
        copy = os.path.join(layer, f".diff-copy-{secrets.token_hex(6)}")
        try:
            run_command(["cp", "-a", "--reflink=auto", "--", diff, copy])
        except CommandFailed as exc:
            remove_tree_quietly(copy, _log.warning)
            raise LayerStoreError(
                f"layer {id} has children and must be copied before it changes, but the copy failed: {exc}"
            ) from None
        new = self._new_link(f"../{id}/diff")
        frozen = FROZEN_PREFIX + old
        os.rename(diff, os.path.join(layer, frozen))
        os.rename(copy, diff)
        tmp_link = os.path.join(self.home, LINK_DIR, f".tmp-{secrets.token_hex(6)}")
        os.symlink(f"../{id}/{frozen}", tmp_link)
        os.replace(tmp_link, os.path.join(self.home, LINK_DIR, old))
        tmp_file = os.path.join(layer, ".link.tmp")
        _write(tmp_file, new)
        os.replace(tmp_file, os.path.join(layer, "link"))

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Mount layer `id` at merged/ (once) and return it; a base layer returns its diff/ unmounted."""
        self._require(id)
        layer = self._dir(id)
        lowers = self._lowers(id)
        read_only = os.path.exists(os.path.join(layer, "read-only"))
        merged = os.path.join(layer, "merged")
        if _mount.is_mounted(merged, os.path.join(layer, "diff")):
            return merged
        if not read_only:
            self._freeze(id)
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
        self._heal_links(id, lowers)
        options = [*DEFAULT_MOUNT_OPTIONS, *self.mount_options]
        if mount_label and os.path.exists("/sys/fs/selinux/enforce"):
            # mount(8) data needs the label quoted (it may hold commas); fsconfig takes the value as is.
            quoted = mount_label if self.mount_api == MountAPI.FSOPEN else f'"{mount_label}"'
            options.append(f"context={quoted}")
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
        if not self._valid(id):
            return
        merged = os.path.join(self._dir(id), "merged")
        if _mount.is_mounted(merged, os.path.join(self._dir(id), "diff")):
            _mount.unmount(merged)

    # -- native diff -------------------------------------------------------

    def _native_lowers(self, id: str, parent: str | None) -> list[str] | None:
        """The absolute lower dirs of `id` when the native diff applies (parent is its real parent)."""
        if not self.native_diff or parent != self._parent_of(id):
            return None
        lowers = self._lowers(id)
        self._heal_links(id, lowers)
        return [os.path.join(self.home, entry) for entry in lowers]

    @hookimpl
    def changes(self, id: str, parent: str | None) -> list[Change] | None:
        """Changes read from diff/: whiteouts are deletions, everything else added or modified."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        return _native.changes(os.path.join(self._dir(id), "diff"), lowers, _XATTR_PREFIXES)

    @hookimpl
    def diff_size(self, id: str, parent: str | None) -> int | None:
        """Sum of the regular file sizes in diff/ (each inode once)."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        return _native.diff_size(os.path.join(self._dir(id), "diff"), lowers, _XATTR_PREFIXES)

    @hookimpl
    def diff(self, id: str, parent: str | None) -> BinaryIO | None:
        """A lazily generated tar of diff/ with kernel whiteouts turned into canonical ones."""
        self._require(id)
        lowers = self._native_lowers(id, parent)
        if lowers is None:
            return None
        chunks = _native.tar_chunks(os.path.join(self._dir(id), "diff"), lowers, _XATTR_PREFIXES, self.id_maps)
        return io.BufferedReader(GeneratedStream(chunks), buffer_size=1 << 16)

    @hookimpl
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int | None:
        """Extract a layer tar straight into diff/, whiteouts in the kernel's form."""
        self._require(id)
        if parent != self._parent_of(id):
            return None
        self._freeze(id)
        # A base layer is never mounted (get returns diff/ itself), so kernel
        # whiteouts there would show as device files: delete instead.
        lowers = self._lowers(id)
        fmt = "overlay" if lowers else "delete"
        diff = os.path.join(self._dir(id), "diff")
        # Names resolve through the lower layers too (links there are followed inside the layer).
        lower_dirs = [os.path.join(self.home, entry) for entry in lowers]
        size = apply_tar(stream, diff, id_maps=self.id_maps, whiteout_format=fmt, lowers=lower_dirs)
        if fmt == "overlay":
            _native.drop_hidden_whiteouts(diff, _XATTR_PREFIXES)
        return int(size)

    # -- facts ---------------------------------------------------------------

    @hookimpl
    def status(self) -> list[tuple[str, str]]:
        """Backing filesystem, d_type, layer count, native diff and the mount API in use."""
        api = "fsopen (new mount API, lowerdir+)" if self.mount_api == MountAPI.FSOPEN else "mount(8) (classic)"
        return [
            ("Backing Filesystem", self.backing_fs),
            ("Supports d_type", "true"),
            ("Native Overlay Diff", str(self.native_diff).lower()),
            ("Mount API", api),
            ("Max Lower Layers", str(self.max_lowers)),
            ("Layers", str(len(self._layer_ids()))),
            ("Mount Options", ",".join([*DEFAULT_MOUNT_OPTIONS, *self.mount_options])),
        ]

    @hookimpl
    def metadata(self, id: str) -> dict[str, str]:
        """LowerDir (resolved, top-down, colon-separated), UpperDir, WorkDir and MergedDir, like Docker."""
        self._require(id)
        layer = self._dir(id)
        result = {
            "UpperDir": os.path.join(layer, "diff"),
            "WorkDir": os.path.join(layer, "work"),
            "MergedDir": os.path.join(layer, "merged"),
        }
        lowers = self._lowers(id)
        if lowers:
            result["LowerDir"] = ":".join(os.path.realpath(os.path.join(self.home, e)) for e in lowers)
        return result

    @hookimpl
    def cleanup(self) -> None:
        """Delete leftovers of interrupted removals.

        The facade has put every reference taken through it, which unmounted
        the layers nobody else holds; a layer still mounted is held by
        another process and stays mounted.
        """
        with contextlib.suppress(OSError):
            self._remove_leftovers()
