"""The storage driver contract.

A driver is a plugin object bound to one home directory, built by the factory
its distribution advertises in the entry-point group ``layerstore.drivers``::

    factory(home: Path, options: Mapping[str, str], id_maps: IDMappings) -> plugin

The factory raises `DriverNotSupported` (with the reason) when the driver
cannot run here; that is the only way it says no.  The plugin object
implements the hooks below with ``@layerstore.hookimpl``.  Every opened driver
gets its own pluggy ``PluginManager`` holding that one plugin, the core's
generic fallbacks (`layerstore.naivediff`, registered ``trylast``) and any
wrappers; nobody calls hooks directly: the `layerstore.Driver` facade does,
adding reference counting of `get`/`put`, per-layer serialisation, the
parent index ("layer in use") and crash marks of `apply_diff`.  The whole
contract, with the helpers of `layerstore.kit` and how to certify a driver,
is in ``docs/driver-guide.md``.

IDs are opaque strings without ``/`` (image layers use 64 lowercase hex).
All hooks are ``firstresult``: the first implementation that returns a value
other than None answers.  The optional hooks may return None to leave the
answer to the generic implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

import pluggy

if TYPE_CHECKING:
    from .capabilities import Capabilities, CreateOpts
    from .change import Change

__all__ = ["HOOK_API_VERSION", "PROJECT_NAME", "REQUIRED_HOOKS", "DriverSpec", "hookimpl", "hookspec"]

PROJECT_NAME = "layerstore"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

REQUIRED_HOOKS: tuple[str, ...] = ("create", "remove", "get", "put", "exists")

HOOK_API_VERSION = 1
"""The version of this hook contract.  A driver declares the version it was written for as the
attribute ``hook_api_version`` of its factory (``hook_api_version = 1`` in the class body); the
core refuses to load a driver that declares another version (`InvalidDriver`, naming both).
A driver that declares none is taken to be written for version 1.  The number changes only when
a hook changes incompatibly; new optional hooks keep it."""


class DriverSpec:
    """The hooks of a storage driver, each with its contract."""

    @hookspec(firstresult=True)
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Create layer `id` whose contents start as an exact copy of `parent`'s.

        With `parent` None the layer's root is an empty directory, mode 0755,
        owned by the (remapped) container root.  A child keeps everything of
        its parent: bytes, modes with setuid/setgid/sticky, owners, symlink
        targets, hardlink identity, device numbers, xattrs, the root mode.
        Later changes to either side never show in the other.

        `opts.storage_opts` carries per-layer options (e.g. ``size``); an
        option the driver does not know is an error, not ignored.

        Raises `LayerExists` if `id` exists, `LayerNotFound` if `parent` is
        missing, `LimitExceeded` (naming the limit) if the chain would be
        deeper than the driver's maximum depth, `ConfigError` naming an
        unknown storage option (`layerstore.kit.check_storage_options`).
        On failure nothing of `id` remains.

        Crash safety: the process may be killed at any instant (the
        conformance suite does it).  Build the layer under a private name and
        publish it with one rename (or a snapshot, or another single atomic
        step; `layerstore.kit.ScratchArea`), so that `exists(id)` is never
        True for a half-built layer, and let the ``gc`` hook collect what a
        killed ``create`` left.  The facade records the parent before this
        hook runs; the driver need not keep a parent index of its own.
        Required.
        """

    @hookspec(firstresult=True)
    def remove(self, id: str) -> None:
        """Delete layer `id` and free its space.

        The facade has already checked that no reference is held and that
        no layer created through it is built on `id` (it raises `LayerInUse`
        itself); the driver unmounts anything of its own first, removes
        nesting it finds inside the layer (btrfs subvolumes, zfs snapshots)
        and never fails with "busy" after the last `put`.  Afterwards
        `exists(id)` is False, even when removal failed half-way (then the
        error says what is left).  Make the layer disappear in one step
        (rename it into a trash, `layerstore.kit.ScratchArea.discard`) and
        delete it afterwards, so that a killed ``remove`` leaves the layer
        whole or gone, and ``gc`` collects the rest.  Raises `LayerNotFound`
        if missing.  Required.
        """

    @hookspec(firstresult=True)
    def get(self, id: str, mount_label: str) -> str:
        """Make the full filesystem of layer `id` (parent chain applied) visible and return its path.

        Idempotent: a second call without `put` returns the same path.  The
        facade calls it for every reference (so a lost mount heals) and
        counts them.  Raises `LayerNotFound` if missing.  Required.
        """
        raise NotImplementedError

    @hookspec(firstresult=True)
    def put(self, id: str) -> None:
        """Tear down what `get` set up for layer `id` (unmount).

        The facade calls it when the last reference is released.  Harmless for
        a layer that is not mounted.  Required.
        """

    @hookspec(firstresult=True)
    def diff_files(self, id: str) -> str | None:
        """Return a directory where the files of layer `id`'s own changes can be read without mounting it.

        Exports read the contents of a layer's tar from here (`Graph.tar_layer`,
        ``save``, ``push``, ``check``), so a driver that keeps a layer's own
        files in a directory of their own (overlay's upper directory, as
        containers/storage's ``DiffGetter`` reads it) spares every read a
        mount, its unmount and whatever a writable mount costs.

        Promise: every regular file that `apply_diff`, or a write through
        `get`'s path, put into the layer is found here at the path it has in
        the layer's full filesystem, with the same content, unless that path
        leads through a symbolic link or directory of a lower layer (symbolic
        links are followed inside this directory, as in the layer).  Other
        paths may be missing or hold what is no regular file (overlay keeps
        a deletion as a device node), but a regular file found here is the
        one the full filesystem shows at that path.  The core holds a reference
        on `id` while it reads (so `remove` refuses, as during a mount), reads
        nothing but regular files, and mounts the layer with `get` for a file
        it cannot find here.  Answer without mounting, copying or changing
        anything: the layer may be mounted and in use elsewhere.  Raises
        `LayerNotFound` if missing.  Return None (the default) when the driver
        has no such directory: readers then mount the layer.  Optional.
        """

    @hookspec(firstresult=True)
    def exists(self, id: str) -> bool:
        """Return True if layer `id` exists (whole), False otherwise.  Never raises for a missing layer.  Required."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def diff(self, id: str, parent: str | None) -> BinaryIO | None:
        """Return a readable binary stream of an uncompressed tar of the changes of `id` against `parent`.

        `parent` None means against an empty tree.  Whiteouts are canonical
        (``.wh.<name>``, ``.wh..wh..opq``), member names relative without
        ``./``, no entry for the root, ownership mapped back to container IDs.
        The caller closes the stream; closing it releases whatever the
        driver holds (a mount).  Return None to use the generic
        implementation.  Optional.
        """

    @hookspec(firstresult=True)
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int | None:
        """Extract the uncompressed layer tar `stream` into layer `id` (which was created on `parent`).

        Applies canonical whiteouts, maps ownership to host IDs, refuses
        unsafe entries with `InvalidArchive` and never writes outside the
        layer.  Reads `stream` to its end.  Returns the sum of the sizes of the
        regular files in the tar.  On failure the layer is left as it was (or
        removed).  Return None to use the generic implementation.  Optional.

        Where entries land (every driver, so that one tar gives one tree):
        an entry whose own name is absolute or contains ``..`` is refused.
        Its parent path is resolved inside the layer's full tree (this layer
        on top of its lower layers), following symbolic links with the layer
        root as ``/``: absolute targets start again at the layer root, ``..``
        never climbs above it (``openat2`` with ``RESOLVE_IN_ROOT``).  The
        entry lands at the resolved place; its own last component is not
        followed (it replaces what is there).  Hardlink targets, whiteouts
        and opaque markers resolve the same way.  With ``lib -> usr/lib`` in
        a lower layer, ``lib/systemd/app.service`` is written to
        ``usr/lib/systemd/app.service`` and ``lib`` stays a link (merged
        /usr); with ``abs -> /opt/real``, ``abs/x`` lands in the layer's
        ``opt/real/x``, never the host's.  Implied directories are created
        0755 owned by the mapped root.  A driver that keeps layers as upper
        directories over lower ones (overlay) resolves through the lower
        layers, creates the upper directories it needs with the lower
        directories' metadata, and turns an opaque root into whiteouts of
        every lower top-level entry.  `layerstore.archive.apply.apply_tar`
        implements all of it (its ``lowers`` argument for upper directories);
        the conformance suite checks the outcome.
        """

    @hookspec(firstresult=True)
    def diff_size(self, id: str, parent: str | None) -> int | None:
        """Return the size in bytes of the changes of `id` against `parent` without building a tar.

        It equals what `apply_diff` returned for the same layer.  Return None
        to use the generic implementation.  Optional.
        """

    @hookspec(firstresult=True)
    def changes(self, id: str, parent: str | None) -> list[Change] | None:
        """Return the paths added, modified and deleted in `id` against `parent`, sorted by path.

        Paths are absolute from the layer root (``/a/b``), never ``/`` itself.
        `Change.kind` is ADD for a path that is new against the parent view (a
        path deleted in an intermediate layer and created again is ADD),
        DELETE once for a removed subtree (not for its children), MODIFY when
        type, mode, owner, device, size, mtime or ``security.capability``
        differ (mtimes compare in whole seconds when either side has no
        sub-second part).  A directory that contains changes is listed as
        MODIFY before them.  Return None to use the generic implementation.
        Optional.
        """

    @hookspec(firstresult=True)
    def status(self) -> list[tuple[str, str]] | None:
        """Return human-readable facts (backing filesystem, layer count, options) as (key, value) pairs.  Optional."""

    @hookspec(firstresult=True)
    def metadata(self, id: str) -> dict[str, str] | None:
        """Return driver facts about layer `id` (e.g. its directories or dataset).

        Raises `LayerNotFound` if missing.  Optional.
        """

    @hookspec(firstresult=True)
    def cleanup(self) -> None:
        """Release what this driver instance holds (private mounts, daemons' handles); the store is closing.

        The facade has already released the references taken through it.
        Layers still referenced by other processes stay mounted.  Optional.
        """

    @hookspec(firstresult=True)
    def gc(self, live_ids: list[str]) -> list[str] | None:
        """Collect this driver's own leftovers of killed processes; return what was removed.

        Called by ``layerstore gc`` (through `layerstore.Driver.gc`) while no
        other operation of this process runs.  `live_ids` are the layers the
        image store knows (a driver may treat other layers as orphans, but
        must not remove a layer another process is creating right now).
        Typical work: `layerstore.kit.ScratchArea.sweep` of the staging and
        trash areas, temporary files of `layerstore.kit.atomic_write`,
        records of layers that no longer exist, snapshots and mount
        directories no layer owns, mounts nobody references.  Must leave
        nothing that a crashed ``create``, ``apply_diff`` or ``remove`` left
        behind.  Returns human
        descriptions of what was removed (None or [] for nothing).  Optional.
        """

    @hookspec(firstresult=True)
    def orphans(self) -> list[str] | None:
        """Describe the leftovers the ``gc`` hook would remove now, without removing anything.

        Called by ``layerstore check`` so that leaks show before anyone runs
        ``gc``.  Must not write to the store.  Returns one human description
        per leftover (None or [] for none).  Optional.
        """

    @hookspec(firstresult=True)
    def capabilities(self) -> Capabilities | None:
        """Return the driver's `Capabilities`; None means all flags off and no depth limit.  Optional."""
