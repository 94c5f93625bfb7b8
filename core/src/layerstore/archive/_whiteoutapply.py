"""Applying whiteouts and opaque directories: how a layer deletes or hides what its lower layers hold.

A ``.wh.<name>`` entry deletes ``<name>``, ``.wh..wh..opq`` makes its
directory opaque (nothing of the lower layers shows through), and other
``.wh..wh.*`` names are AUFS bookkeeping without content (the names are
`layerstore.archive.whiteouts`).  Whiteouts and opaque markers resolve like
any member name.

- "delete" format (the layer directory holds the full tree): a whiteout
  removes what is there; an opaque directory is pruned, once the whole
  archive is written, of everything the archive did not create.
- "overlay" format (an upper directory over read-only lower directories):
  a whiteout becomes a 0/0 character device, an opaque marker the
  ``<prefix>opaque`` xattr.  The kernel ignores that xattr on the upper root,
  so an opaque root becomes, at the end, whiteouts of every lower top-level
  entry; and lower files copied up for a hardlink that an opaque directory
  now hides are removed again, as the "delete" format would have them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING

from ..errors import InvalidArchive
from ._safepath import remove_path
from .whiteouts import OPAQUE, OVERLAY_OPAQUE_VALUE, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._written import Written
    from .tarstream import TarEntry

__all__ = ["WhiteoutApplier"]


class WhiteoutApplier:
    """Whiteout and opaque entries of one extraction, recorded in `written`; `owner` maps an entry's owner.

    Call `apply` for each whiteout entry and `finish` once after the last entry.
    """

    def __init__(
        self, written: Written, owner: Callable[[TarEntry], tuple[int, int]], overlay_prefix: str, overlay: bool
    ) -> None:
        self.written = written
        self.tree = written.tree
        self.owner = owner
        self.overlay = overlay
        self.opaque_xattr = f"{overlay_prefix}opaque"
        #: Overlay: the archive made the layer root opaque.
        self.opaque_root = False
        #: Resolved directories the archive made opaque.
        self.opaque: list[str] = []

    def apply(self, entry: TarEntry, parts: list[str]) -> None:
        """Apply the whiteout `entry`, whose name has the components `parts` (the last one starts with ``.wh.``)."""
        base = parts[-1]
        name = entry.name
        if base == OPAQUE:
            self._opaque(parts, name)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): no content
        hidden = base[len(WHITEOUT_PREFIX) :]
        if not hidden or hidden in (".", ".."):
            raise InvalidArchive(f"unsafe tar entry {name!r}: a whiteout must name an entry")
        parent = self.tree.parent(parts, name, create=self.overlay)
        if parent is None:
            return
        rel = f"{parent}/{hidden}" if parent else hidden
        path = self.tree.path(rel)
        if self.overlay:
            kind, _ = self.tree.kind(rel)
            self.written.keep_content(rel, kind in ("dir", "link"))
            self.written.create(lambda p: os.mknod(p, stat.S_IFCHR, 0), rel, path)
            os.chown(path, *self.owner(entry), follow_symlinks=False)
            self.written.created.add(rel)
            self.tree.forget(rel)
            return
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        self.written.remove(rel, path, mode)

    def _opaque(self, parts: list[str], name: str) -> None:
        parent = self.tree.parent(parts, name, create=self.overlay)
        if parent is None:
            return  # the directory does not exist: there is nothing below to hide
        if self.overlay and not parent:
            self.opaque_root = True  # the kernel ignores an opaque upper root: see `_hide_lower_root`
        elif self.overlay:
            os.setxattr(self.tree.path(parent), self.opaque_xattr, OVERLAY_OPAQUE_VALUE, follow_symlinks=False)
            self.tree.forget(parent)
            self.opaque.append(parent)
        else:
            self.opaque.append(parent)

    def finish(self) -> None:
        """After the last entry: the passes that need the whole archive written (see the module docstring)."""
        if self.written.copied_up:
            self._drop_copied_up()
        if self.opaque_root:
            self._hide_lower_root()
        if self.opaque and not self.overlay:
            self._prune_opaque()

    def _hide_lower_root(self) -> None:
        """Overlay, opaque root: whiteouts for every lower top-level entry, opaque upper directories."""
        tree = self.tree
        with os.scandir(tree.root) as it:
            upper = {e.name: e.is_dir(follow_symlinks=False) for e in it}
        for name, is_dir in upper.items():
            if is_dir:
                os.setxattr(tree.path(name), self.opaque_xattr, OVERLAY_OPAQUE_VALUE, follow_symlinks=False)
        for name in tree.lower_names(""):
            if name not in upper:
                path = tree.path(name)
                os.mknod(path, stat.S_IFCHR, 0)
                os.chown(path, *tree.owner, follow_symlinks=False)

    def _drop_copied_up(self) -> None:
        """Overlay: remove lower files copied up for hardlinks that an opaque directory now hides (as on vfs)."""
        tops = ["" if self.opaque_root else None, *self.opaque]
        for rel in self.written.copied_up - self.written.created:
            self.tree.trim()
            if any(top == "" or (top is not None and rel.startswith(f"{top}/")) for top in tops):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tree.path(rel))

    def _prune_opaque(self) -> None:
        """Remove from each opaque directory everything this archive did not create."""
        keep = set(self.written.created)
        for rel in self.written.created:
            while True:
                rel = rel.rpartition("/")[0]
                if not rel or rel in keep:
                    break
                keep.add(rel)
        for rel in self.opaque:
            if rel in self.tree.dirs:
                self._prune(rel, keep)

    def _prune(self, top: str, keep: set[str]) -> None:
        stack = [top]
        while stack:
            rel = stack.pop()
            self.tree.trim()
            with os.scandir(self.tree.path(rel)) as it:
                children = list(it)
            for child in children:
                child_rel = f"{rel}/{child.name}" if rel else child.name
                is_dir = child.is_dir(follow_symlinks=False)
                if child_rel in keep:
                    if is_dir:
                        stack.append(child_rel)
                    continue
                remove_path(child.path, is_dir)
                if is_dir or child.is_symlink():
                    self.written.forget(child_rel)
