"""Short names of layers, their healing, and the frozen states of parents that children stack on.

Every layer has a short name (``<home>/<id>/link``) and a symlink
``l/<short>`` to its diff/, so that a mount names each lower layer in ~29
bytes; a child's ``lower`` file lists the short names of its chain.  Lost
links are re-created from the layers' records (`Links.heal`).

A child must never see later changes to its parent.  Before a layer whose
current short name children stack on is changed (mounted writable, or a
diff applied), `Freezer.freeze` gives those children a state of diff/ that
never changes again, and the layer a new short name for its diff/:

- if diff/ has not changed since it was last copied from a frozen state
  ``frozen-<short>``, the children's short name becomes an *alias* of that
  state (``aliases/<short>`` names it; ``l/<short>`` points there): no copy,
  so repeated reads of a parent share one frozen state;
- otherwise diff/ is copied (`layerstore.kit.copy_tree` in a staging entry)
  and the copy exchanged with diff/ in one step; the old diff/ (which
  mounted children keep using) becomes ``frozen-<short>``.

"Not changed since the copy" is read from inode change times: after a copy,
the driver records a mark taken once the clock has moved past every change
the copy made (``copied-from``); any later write, chmod, xattr or deletion
in diff/ gives some inode a newer ``ctime``, which userspace cannot set
back.  A state no child stacks on any more is deleted with its links (when
the last such child is removed, or by ``gc``).  Every step is ordered so
that a process killed at any point leaves either the old state or one that
the next freeze (or ``gc``) completes; copies cut short are staging
leftovers that ``gc`` sweeps.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
from collections.abc import Callable

from layerstore.errors import CorruptMetadata, LayerStoreError, StorageFull
from layerstore.kit import ScratchArea, atomic_write, copy_tree, is_atomic_temporary, sweep_atomic_temporaries
from layerstore.mountinfo import read_mountinfo

from ._clock import changed_since, clock_mark
from ._layout import ALIASES_DIR, COPIED_FROM, FROZEN_PREFIX, KIDS_DIR, LINK_DIR, Layout, dir_lock, read_text

__all__ = ["Freezer", "Leftover", "Links", "short_name"]

_SHORT_LEN = 26

Leftover = tuple[str, Callable[[], object]]
"""A description of something ``gc`` removes, and how to remove it."""


def short_name() -> str:
    """A fresh random short name (26 base32 characters)."""
    return base64.b32encode(os.urandom(16)).decode().rstrip("=")[:_SHORT_LEN]


class Links:
    """The ``l/`` directory and the children index (``<id>/kids/<child>``: the short name it stacks on)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def new_link(self, target: str) -> str:
        """Create ``l/<new short name>`` pointing at `target`; return the name."""
        while True:
            short = short_name()
            try:
                os.symlink(target, self.layout.link_path(short))
            except FileExistsError:
                continue
            return short

    def point(self, short: str, target: str) -> None:
        """Make ``l/<short>`` point at `target` in one step (replacing what it pointed at)."""
        tmp = self.layout.link_path(f".tmp-{os.urandom(6).hex()}")
        os.symlink(target, tmp)
        os.replace(tmp, self.layout.link_path(short))

    def unlink_if(self, short: str, target_prefix: str) -> None:
        """Delete ``l/<short>`` if it points below `target_prefix` (another layer may own the name now)."""
        path = self.layout.link_path(short)
        with contextlib.suppress(OSError):
            if os.readlink(path).startswith(target_prefix):
                os.unlink(path)

    def frozen_target(self, owner: str, short: str) -> str | None:
        """The frozen state of `owner` that `short` names (``frozen-<short>`` or an alias), if any."""
        layer = self.layout.dir(owner)
        alias = read_text(os.path.join(layer, ALIASES_DIR, short))
        if alias and os.path.isdir(os.path.join(layer, alias)):
            return alias
        if os.path.isdir(os.path.join(layer, FROZEN_PREFIX + short)):
            return FROZEN_PREFIX + short
        return None

    def expected_target(self, owner: str, short: str) -> str | None:
        """Where ``l/<short>`` of layer `owner` must point, or None when `owner` has no such name."""
        frozen = self.frozen_target(owner, short)
        if frozen is not None:
            return f"../{owner}/{frozen}"
        if read_text(os.path.join(self.layout.dir(owner), "link")) == short:
            return f"../{owner}/diff"
        return None

    def heal(self, id: str, lowers: list[str]) -> None:
        """Recreate missing ``l/<short>`` links of the chain below `id` from each layer's records."""
        chain: list[str] | None = None
        for index, entry in enumerate(lowers):
            link_path = os.path.join(self.layout.home, entry)
            if os.path.isdir(link_path):
                continue
            if chain is None:
                chain = []
                current = self.layout.parent_of(id)
                while current is not None and len(chain) < len(lowers):
                    chain.append(current)
                    current = self.layout.parent_of(current)
            short = entry.rpartition("/")[2]
            if index >= len(chain) or not self.layout.exists(chain[index]):
                raise CorruptMetadata(
                    f"layer {id}: lower layer {entry} is missing and its layer cannot be found through the "
                    f"parent files ({self.layout.dir(id)}/lower vs parent chain); remove layer {id} and re-import it"
                )
            owner = chain[index]
            target = self.expected_target(owner, short)
            if target is None:
                link_file = os.path.join(self.layout.dir(owner), "link")
                recorded = read_text(link_file)
                if recorded is None:
                    raise CorruptMetadata(
                        f"layer {owner}: both its short-name file {link_file} and its link {link_path} are "
                        f"missing; restore them with: printf %s {short} > {link_file}  (the name comes from "
                        f"{self.layout.dir(id)}/lower), then mount again"
                    )
                raise CorruptMetadata(
                    f"layer {owner}: {link_file} says {recorded!r} but {self.layout.dir(id)}/lower expects "
                    f"{short!r}; write {short} into {link_file} (or remove layer {id} and re-import it)"
                )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link_path)  # a dangling or wrong link
            with contextlib.suppress(FileExistsError):
                os.symlink(target, link_path)

    def kids(self, id: str) -> list[tuple[str, str]]:
        """The children of `id` (verified: they exist and name `id` as parent) with the short name each uses."""
        kids = []
        for kid, short in self.kid_records(id):
            if self.layout.exists(kid) and self.layout.parent_of(kid) == id:
                kids.append((kid, short))
        return kids

    def kid_records(self, id: str) -> list[tuple[str, str]]:
        """Every child record of `id` (child, short name), verified or not."""
        directory = os.path.join(self.layout.dir(id), KIDS_DIR)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        return [(n, read_text(os.path.join(directory, n)) or "") for n in names if not n.startswith(".")]

    def register_kid(self, parent: str, child: str, short: str) -> str:
        """Record that `child` stacks on `parent`'s short name `short`; return the record's path."""
        kids = os.path.join(self.layout.dir(parent), KIDS_DIR)
        os.makedirs(kids, mode=0o700, exist_ok=True)
        record = os.path.join(kids, child)
        atomic_write(record, short, durable=False)
        return record

    def forget(self, id: str, parent: str | None, shorts: list[str]) -> None:
        """Drop the child record and the links of layer `id`, which is gone."""
        if parent is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.layout.dir(parent), KIDS_DIR, id))
        for short in shorts:
            self.unlink_if(short, f"../{id}/")

    def shorts_of(self, id: str) -> list[str]:
        """Every short name layer `id` owns: its own, its frozen states' and their aliases."""
        layer = self.layout.dir(id)
        shorts = [read_text(os.path.join(layer, "link")) or ""]
        with contextlib.suppress(FileNotFoundError):
            shorts += [n[len(FROZEN_PREFIX) :] for n in os.listdir(layer) if n.startswith(FROZEN_PREFIX)]
        with contextlib.suppress(FileNotFoundError):
            shorts += os.listdir(os.path.join(layer, ALIASES_DIR))
        return [s for s in shorts if s and not s.startswith(".")]

    def stale_links(self) -> list[Leftover]:
        """Links in ``l/`` that lead nowhere, or that the intact records of their layer do not explain.

        A link whose layer lost its ``link`` file is kept: it is what a
        repair needs.
        """
        found: list[Leftover] = []
        directory = os.path.join(self.layout.home, LINK_DIR)
        for short in sorted(os.listdir(directory)):
            path = os.path.join(directory, short)
            try:
                target = os.readlink(path)
            except OSError:
                continue
            owner = target.split("/")[1] if target.startswith("../") and target.count("/") == 2 else ""
            if not self.layout.exists(owner) or not os.path.exists(os.path.join(directory, target)):
                found.append((f"overlay stale link l/{short}", _unlinker(path)))
                continue
            # Links change only under their owner's lock (a half-made one is named .tmp-*).
            with contextlib.suppress(FileNotFoundError), dir_lock(self.layout.dir(owner), blocking=False) as got:
                if got and (short.startswith(".tmp-") or self._unexplained(owner, short)):
                    found.append((f"overlay stale link l/{short}", _unlinker(path)))
        return found

    def _unexplained(self, owner: str, short: str) -> bool:
        """True when `owner`'s records are intact and none of them names `short` (a freeze cut short made it)."""
        own = read_text(os.path.join(self.layout.dir(owner), "link"))
        return own is not None and self.expected_target(owner, short) is None


class Freezer:
    """Freezes the state of a parent that children stack on, and deletes states no child needs."""

    def __init__(self, links: Links, staging: ScratchArea, trash: ScratchArea) -> None:
        self.links = links
        self.layout = links.layout
        self.staging = staging
        self.trash = trash

    def freeze(self, id: str) -> None:
        """Make sure no child of `id` sees what happens to `id`'s diff/ from now on (see the module)."""
        layer = self.layout.dir(id)
        with dir_lock(layer):
            self._finish(id)
            current = read_text(os.path.join(layer, "link"))
            if not current or not any(short == current for _, short in self.links.kids(id)):
                return
            shared = self._unchanged_copy_of(id, current)
            if shared is not None:
                os.makedirs(os.path.join(layer, ALIASES_DIR), mode=0o700, exist_ok=True)
                atomic_write(os.path.join(layer, ALIASES_DIR, current), shared, durable=False)
            else:
                self._copy(id, current)
            self._finish(id)

    def _finish(self, id: str) -> None:
        """Complete a freeze whose state exists: point the old short name there, give diff/ a new one."""
        layer = self.layout.dir(id)
        current = read_text(os.path.join(layer, "link"))
        frozen = self.links.frozen_target(id, current) if current else None
        if not current or frozen is None:
            return
        self.links.point(current, f"../{id}/{frozen}")
        new = self.links.new_link(f"../{id}/diff")
        atomic_write(os.path.join(layer, "link"), new, durable=False)

    def _copy(self, id: str, current: str) -> None:
        layer = self.layout.dir(id)
        diff = os.path.join(layer, "diff")
        frozen = FROZEN_PREFIX + current
        try:
            with self.staging.reserve(f"freeze-{id}") as entry:
                copy_tree(diff, entry.path)
                entry.exchange(diff)  # diff/ is the copy now; mounted children keep the old tree
                entry.publish(os.path.join(layer, frozen))
        except OSError as exc:
            error = StorageFull if exc.errno in _SPACE_ERRNOS else LayerStoreError
            raise error(
                f"layer {id} has children and must be copied before it changes, but the copy failed: "
                f"{exc.strerror or exc}"
            ) from exc
        mark = clock_mark(self.staging)
        record = f"{frozen}\n{mark}\n{os.lstat(diff).st_ino}\n"
        atomic_write(os.path.join(layer, COPIED_FROM), record, durable=False)

    def _unchanged_copy_of(self, id: str, current: str) -> str | None:
        """The frozen state diff/ was copied from, if diff/ has not changed since and no mount uses it live."""
        layer = self.layout.dir(id)
        fields = (read_text(os.path.join(layer, COPIED_FROM)) or "").split("\n")
        if len(fields) != 3 or not fields[0].startswith(FROZEN_PREFIX) or not fields[1].isdigit():
            return None
        frozen, mark, ino = fields[0], int(fields[1]), fields[2]
        diff = os.path.join(layer, "diff")
        if not os.path.isdir(os.path.join(layer, frozen)) or str(os.lstat(diff).st_ino) != ino:
            return None
        if changed_since(diff, mark) or self._mounted_on(current):
            return None
        return frozen

    def _mounted_on(self, short: str) -> bool:
        """True when a mounted layer stacks on ``l/<short>`` (its mount holds diff/ itself, not a frozen state)."""
        needle = f"{LINK_DIR}/{short}"
        for mount in read_mountinfo():
            layer, leaf = os.path.split(mount.mountpoint)
            home, layer_id = os.path.split(layer)
            ours = mount.fstype == "overlay" and leaf == "merged" and home == self.layout.home
            if ours and needle in self.layout.lowers(layer_id):
                return True
        return False

    def drop_unused(self, id: str, *, blocking: bool = True) -> list[str]:
        """Delete the frozen states of `id` no child stacks on any more, and stale records; describe them."""
        found = self.unused(id, blocking=blocking, remove=True)
        return [description for description, _ in found]

    def unused(self, id: str, *, blocking: bool = False, remove: bool = False) -> list[Leftover]:
        """What of `id`'s frozen states and records nobody needs (removed too when `remove`)."""
        layer = self.layout.dir(id)
        try:
            with dir_lock(layer, blocking=blocking) as got:
                if not got:
                    return []  # a freeze or create is under way: look again next time
                found = self._unused_locked(id)
                for _, action in found if remove else ():
                    action()
                return found
        except FileNotFoundError:
            return []

    def _unused_locked(self, id: str) -> list[Leftover]:
        layer = self.layout.dir(id)
        current = read_text(os.path.join(layer, "link")) or ""
        used = {short for _, short in self.links.kids(id)} | {current}
        needed = {self.links.frozen_target(id, short) for short in used}
        found: list[Leftover] = []
        for name in sorted(os.listdir(layer)):
            if name.startswith(FROZEN_PREFIX) and name not in needed:
                found.append((f"overlay unused frozen copy {id}/{name}", self._discarder(id, name)))
        for alias in _names(os.path.join(layer, ALIASES_DIR)):
            if alias not in used:
                found.append((f"overlay unused alias {id}/{ALIASES_DIR}/{alias}", self._alias_remover(id, alias)))
        kids_dir = os.path.join(layer, KIDS_DIR)
        live = {kid for kid, _ in self.links.kids(id)}
        for kid, _ in self.links.kid_records(id):
            if kid not in live:
                found.append(
                    (f"overlay stale child record {id}/{KIDS_DIR}/{kid}", _unlinker(os.path.join(kids_dir, kid)))
                )
        for directory in (layer, kids_dir, os.path.join(layer, ALIASES_DIR)):
            for name in _names(directory, hidden=True):
                if is_atomic_temporary(name):
                    where = os.path.relpath(os.path.join(directory, name), self.layout.home)
                    found.append((f"overlay temporary file {where}", _temporaries_sweeper(directory)))
        return found

    def _discarder(self, id: str, name: str) -> Callable[[], object]:
        def discard() -> None:
            layer = self.layout.dir(id)
            self.links.unlink_if(name[len(FROZEN_PREFIX) :], f"../{id}/{name}")
            for alias in _names(os.path.join(layer, ALIASES_DIR)):
                if read_text(os.path.join(layer, ALIASES_DIR, alias)) == name:
                    self._alias_remover(id, alias)()
            if (read_text(os.path.join(layer, COPIED_FROM)) or "").startswith(f"{name}\n"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(layer, COPIED_FROM))
            with contextlib.suppress(FileNotFoundError):
                self.trash.discard(os.path.join(layer, name), f"frozen-{id}")

        return discard

    def _alias_remover(self, id: str, alias: str) -> Callable[[], object]:
        def remove() -> None:
            self.links.unlink_if(alias, f"../{id}/{FROZEN_PREFIX}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.layout.dir(id), ALIASES_DIR, alias))

        return remove


_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _names(directory: str, *, hidden: bool = False) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if hidden or not n.startswith("."))
    except FileNotFoundError:
        return []


def _temporaries_sweeper(directory: str) -> Callable[[], object]:
    return lambda: sweep_atomic_temporaries(directory)


def _unlinker(path: str) -> Callable[[], object]:
    def unlink() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    return unlink
