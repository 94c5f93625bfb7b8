"""Deliberately broken variants of the vfs driver: the conformance suite must fail each of them.

The self-tests copy this file next to a pytester test module; each factory
is a module-level class so that the suite's second process can import it.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from typing import BinaryIO

from layerstore import CreateOpts, hookimpl
from layerstore.archive.changes import tree_changes
from layerstore.archive.export import export_changes
from layerstore.kit import copy_tree
from layerstore_vfs import VfsDriver


class LosesXattrsDriver(VfsDriver):
    """A child is not a copy: every extended attribute of the parent is dropped."""

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Copy as vfs does, then strip the xattrs of the copy."""
        super().create(id, parent, opts)
        if parent is None:
            return
        root = str(self._path(id))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [".", *dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                for attr in os.listxattr(path, follow_symlinks=False):
                    os.removexattr(path, attr, follow_symlinks=False)


class DropsWhiteoutsDriver(VfsDriver):
    """A native diff that forgets every ``.wh.`` entry."""

    @hookimpl
    def diff(self, id: str, parent: str | None) -> BinaryIO:
        """The generic export, filtered (buffered in memory: fine for a test double)."""
        layer = str(self._path(id))
        lower = str(self._path(parent)) if parent is not None else None
        out = io.BytesIO()
        with (
            export_changes(layer, tree_changes(layer, lower), id_maps=self.id_maps) as source,
            tarfile.open(fileobj=source, mode="r|") as tin,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tout,
        ):
            for member in tin:
                if os.path.basename(member.name).startswith(".wh."):
                    continue
                tout.addfile(member, tin.extractfile(member) if member.isreg() else None)
        out.seek(0)
        return out


class ViewPerGetDriver(VfsDriver):
    """Mounts a private copy of the layer, re-made on every get: a second holder destroys the first's view."""

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Copy the layer to views/<id>, replacing whatever is there."""
        source = super().get(id, mount_label)
        view = self.home / "views" / id
        if view.exists():
            shutil.rmtree(view)
        view.parent.mkdir(exist_ok=True)
        shutil.copytree(source, view, symlinks=True)
        return str(view)

    @hookimpl
    def put(self, id: str) -> None:
        """Drop the view."""
        shutil.rmtree(self.home / "views" / id, ignore_errors=True)


class ExtractsAnywhereDriver(VfsDriver):
    """apply_diff trusts the tar: tarfile.extractall without any containment."""

    @hookimpl
    def apply_diff(self, id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract everything where the tar says."""
        size = 0
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isreg():
                    size += member.size
                tar.extract(member, self._path(id), filter="fully_trusted")
        return size


class BuildsInPlaceDriver(VfsDriver):
    """create copies the parent straight into the layer's final directory: a kill leaves half a layer."""

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """mkdir dir/<id>, then copy into it."""
        target = self._path(id)
        os.mkdir(target, 0o755)
        if parent is not None:
            copy_tree(self._path(parent), target)


class LeaksStagingDriver(VfsDriver):
    """Like vfs, but its gc hook collects nothing: what a killed create staged stays forever."""

    @hookimpl
    def gc(self, live_ids: list[str]) -> list[str]:
        """Forget to sweep."""
        return []

    def _sweep(self) -> list[str]:
        return []


class RemoveLeavesFilesDriver(VfsDriver):
    """remove hides the layer but never deletes its files."""

    @hookimpl
    def remove(self, id: str) -> None:
        """Rename the layer to a hidden name and stop there."""
        os.rename(self._path(id), self.home / f".removed-{id}")


def _walk_child(driver: VfsDriver, id: str) -> list[str]:
    """Every path below layer `id` (not the root)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(driver._path(id)):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return found


class _Mutates(VfsDriver):
    """A vfs whose children are copies, then damaged by `damage` (a planted bug)."""

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """Copy as vfs does, then damage the copy."""
        super().create(id, parent, opts)
        if parent is not None:
            self.damage(id)

    def damage(self, id: str) -> None:
        raise NotImplementedError


class IgnoresParentDriver(VfsDriver):
    """create ignores the parent: every layer starts empty."""

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        """An empty layer, whatever the parent."""
        super().create(id, None, opts)


class FollowsSymlinksDriver(_Mutates):
    """The copy follows symlinks: a link to an existing file becomes a copy of the file."""

    def damage(self, id: str) -> None:
        for path in _walk_child(self, id):
            if os.path.islink(path) and os.path.isfile(path):
                target = os.path.realpath(path)
                os.unlink(path)
                shutil.copy2(target, path)


class LosesOwnersDriver(_Mutates):
    """The copy is owned by root."""

    def damage(self, id: str) -> None:
        for path in _walk_child(self, id):
            os.chown(path, 0, 0, follow_symlinks=False)


class LosesTimesDriver(_Mutates):
    """The copy has the time of the copy."""

    def damage(self, id: str) -> None:
        for path in _walk_child(self, id):
            os.utime(path, follow_symlinks=False)


class LosesHardlinksDriver(_Mutates):
    """Hardlinked names become separate files."""

    def damage(self, id: str) -> None:
        for path in _walk_child(self, id):
            st = os.lstat(path)
            if not os.path.islink(path) and os.path.isfile(path) and st.st_nlink > 1:
                shutil.copy2(path, f"{path}.tmp")
                os.chown(f"{path}.tmp", st.st_uid, st.st_gid)
                os.rename(f"{path}.tmp", path)


class LosesSpecialFilesDriver(_Mutates):
    """fifos and device nodes are not copied (what shutil.copytree cannot do)."""

    def damage(self, id: str) -> None:
        for path in _walk_child(self, id):
            mode = os.lstat(path).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(path)


class RemoveKeepsLayerDriver(VfsDriver):
    """remove does nothing: the layer stays."""

    @hookimpl
    def remove(self, id: str) -> None:
        """Forget to delete."""


class GetNotIdempotentDriver(VfsDriver):
    """Every get returns a new path (a fresh copy of the layer)."""

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        """Copy the layer to a new view and return it."""
        source = super().get(id, mount_label)
        views = self.home / "views"
        views.mkdir(exist_ok=True)
        view = views / f"{id}-{len(os.listdir(views))}"
        shutil.copytree(source, view, symlinks=True)
        return str(view)
