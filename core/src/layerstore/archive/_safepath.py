"""Containment: tar member names to places inside a layer, symbolic links resolved inside the layer.

The rule (the same for every driver): a member's own name must be relative
and must not contain ``..`` (`split_name` refuses anything else).  Its parent
directories are then resolved inside the layer's full tree, following
symbolic links with the layer root as ``/``: an absolute link target starts
again at the layer root, and ``..`` never climbs above it (what ``openat2``
with ``RESOLVE_IN_ROOT`` does).  The member lands at the resolved place; its
own last component is never followed.  So nothing is ever created, removed or
changed outside the layer, whatever a link says.

`SafeTree` does that resolution for a layer directory and, for overlay, for
an upper directory over read-only lower directories: a parent that crosses a
link or a directory of a lower layer resolves through the merged view, and
the upper directories it needs are created with the lower directories'
owner, mode and extended attributes.  Resolved directories are cached, so a
parent is looked up once; whenever the extraction removes or replaces a
directory or a link, the cache forgets what could depend on it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from ..errors import InvalidArchive
from ..fstree import remove_tree
from ..longpaths import ShortPaths
from ..xattrs import get_xattr, list_xattrs
from .whiteouts import OVERLAY_XATTR_PREFIXES

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_LINKS", "SafeTree", "is_whiteout_node", "next_component", "push_target", "remove_path", "split_name"]

#: Symbolic links followed while resolving one path before giving up (the kernel's limit).
MAX_LINKS = 40

_NOT_FOUND = (FileNotFoundError, NotADirectoryError)


def split_name(name: str, what: str = "tar entry") -> list[str]:
    """Return the components of a member name (``./a//b/`` -> ``["a", "b"]``; the root is ``[]``).

    Raises `InvalidArchive` naming the entry for an absolute name or a ``..`` component.
    """
    if name.startswith("/"):
        raise InvalidArchive(
            f"unsafe {what} {name!r}: absolute paths are refused; use names relative to the layer root"
        )
    # Substring tests first: a name may have thousands of components, and
    # scanning the list for each rule would cost as much again per entry.
    bare = name.rstrip("/")
    parts = bare.split("/")
    if not bare or "//" in bare or "." in parts[0] or "/." in bare:
        parts = [p for p in parts if p and p != "."]
        if ".." in parts:
            raise InvalidArchive(f"unsafe {what} {name!r}: '..' components are refused")
    return parts


def remove_path(path: str, is_dir: bool) -> None:
    """Remove a file, link or node, or a whole directory tree (iteratively) without following links."""
    if is_dir:
        remove_tree(path, missing_ok=False)
    else:
        os.unlink(path)


def next_component(todo: list[str], done: list[str]) -> str | None:
    """Pop the next component to resolve from the stack `todo`; None when it needed no lookup.

    ``""`` and ``.`` are skipped; ``..`` drops the last resolved component of
    `done`, never going above the root.
    """
    comp = todo.pop()
    if comp in ("", "."):
        return None
    if comp == "..":
        if done:
            done.pop()
        return None
    return comp


def push_target(todo: list[str], done: list[str], target: str) -> None:
    """Continue a resolution with a link's `target`: an absolute one starts again at the root."""
    if target.startswith("/"):
        done.clear()
    todo.extend(reversed(target.split("/")))


def is_whiteout_node(st: os.stat_result) -> bool:
    """True for an overlayfs whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class SafeTree:
    """The layer directory being extracted to, with in-layer path resolution and a cache of resolved directories.

    `lowers` (overlay only) are the read-only directories below `root`, top
    first; `opaque_xattr` is the xattr that marks an opaque directory there.
    `links_followed` counts the symbolic links resolution went through (the
    extraction uses it to know whether names and places may differ).
    """

    def __init__(self, root: str, owner: tuple[int, int], lowers: Sequence[str] = (), opaque_xattr: str = "") -> None:
        self.root = root.rstrip("/") or "/"
        self.owner = owner
        self.lowers = [lower.rstrip("/") for lower in lowers]
        # Paths below PATH_MAX for every entry, however deep (see layerstore.longpaths).
        self._paths = ShortPaths(self.root)
        self._lower_paths = [ShortPaths(lower) for lower in self.lowers]
        self._opaque_xattr = opaque_xattr
        # Resolved real directories of the upper/layer tree (relative paths).
        self.dirs: set[str] = {""}
        # Unresolved parent path -> resolved parent path, for parents that crossed a link.
        self._aliases: dict[str, str] = {}
        # Resolved directory -> indexes of the lower directories that merge into it (overlay).
        self._merged: dict[str, tuple[int, ...]] = {"": tuple(range(len(self.lowers)))}
        self.links_followed = 0
        # Resolved path of each link an entry was resolved through -> the first such entry's name.
        self.traversed: dict[str, str] = {}

    def path(self, rel: str) -> str:
        """A path of the entry at `rel` (``""`` is the root), valid until the next `trim` (see `ShortPaths`)."""
        return self._paths.path(rel)

    def trim(self) -> None:
        """Between entries: bound the directory descriptors that keep deep paths short."""
        self._paths.trim()
        for lower in self._lower_paths:
            lower.trim()

    def close(self) -> None:
        """Release the descriptors held for deep paths."""
        self._paths.close()
        for lower in self._lower_paths:
            lower.close()

    # -- lookups in the merged view -------------------------------------------

    def _upper_lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self._paths.path(rel))
        except _NOT_FOUND:
            return None

    def _lower_lookup(
        self, parent: str, rel: str, layers: tuple[int, ...] | None = None
    ) -> tuple[os.stat_result, str, tuple[int, ...]] | None:
        """The topmost lower entry at `rel` (in the lowers merging into `parent`): stat, path, lowers merging below."""
        if layers is None:
            layers = self._merged_into(parent)
        for pos, index in enumerate(layers):
            path = self._lower_paths[index].path(rel)
            try:
                st = os.lstat(path)
            except _NOT_FOUND:
                continue
            if is_whiteout_node(st):
                return None
            below: tuple[int, ...] = ()
            if stat.S_ISDIR(st.st_mode):
                merging = [index]
                if not self._opaque(path):
                    for other in layers[pos + 1 :]:
                        try:
                            other_path = self._lower_paths[other].path(rel)
                            other_st = os.lstat(other_path)
                        except _NOT_FOUND:
                            continue
                        if not stat.S_ISDIR(other_st.st_mode):
                            break  # a whiteout or a non-directory ends the merge
                        merging.append(other)
                        if self._opaque(other_path):
                            break
                below = tuple(merging)
            return st, path, below
        return None

    def _opaque(self, path: str) -> bool:
        if not self._opaque_xattr:
            return False
        try:
            return get_xattr(path, self._opaque_xattr) == b"y"
        except OSError:
            return False

    def _copy_up_dir(self, rel: str, lower_st: os.stat_result, lower_path: str, below: tuple[int, ...]) -> None:
        """Create upper directory `rel` with the owner, mode and xattrs of the lower directory it extends."""
        path = self._paths.path(rel)
        os.mkdir(path, 0o700)
        for key in list_xattrs(lower_path):
            if key.startswith(OVERLAY_XATTR_PREFIXES) or (self._opaque_xattr and key.startswith(self._opaque_xattr)):
                continue
            try:
                os.setxattr(path, key, get_xattr(lower_path, key), follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENODATA):
                    raise
        os.chown(path, lower_st.st_uid, lower_st.st_gid, follow_symlinks=False)
        os.chmod(path, stat.S_IMODE(lower_st.st_mode))
        self._merged[rel] = below

    # -- resolution ------------------------------------------------------------

    def parent(self, parts: list[str], name: str, *, create: bool) -> str | None:
        """Resolve the parent directories of `parts` inside the layer; return the parent's resolved relative path.

        Missing parents are created 0755 owned by `owner` when `create`, else
        None is returned.  A parent that is (or whose link leads to) something
        other than a directory, or a chain of more than `MAX_LINKS` links, is
        refused with `InvalidArchive` naming the entry.
        """
        parent = "/".join(parts[:-1])
        if parent in self.dirs:
            return parent
        alias = self._aliases.get(parent)
        if alias is not None and alias in self.dirs:
            return alias
        if not create:
            return self._lookup(parts[:-1], name)
        resolved = self._create(parts[:-1], name)
        if resolved != parent:
            self._aliases[parent] = resolved
        return resolved

    def resolve_path(self, parts: list[str], name: str) -> str | None:
        """The resolved relative path of `parts` (the parent resolved, the last component not followed), or None."""
        if not parts:
            return ""
        parent = self.parent(parts, name, create=False)
        if parent is None:
            return None
        return f"{parent}/{parts[-1]}" if parent else parts[-1]

    def _follow(self, todo: list[str], done: list[str], target: str, *, links: int, name: str, where: str) -> int:
        """Push a link's target onto the components still to resolve; return the new link count."""
        links += 1
        self.links_followed += 1
        self.traversed.setdefault(where, name)
        if links > MAX_LINKS:
            raise InvalidArchive(f"tar entry {name!r}: too many levels of symbolic links at {where!r}")
        push_target(todo, done, target)
        return links

    def _create(self, components: list[str], name: str) -> str:
        """Resolve `components` as directories, creating what is missing in the layer (or upper) directory."""
        todo = components[::-1]  # a stack: the next component is at the end
        done: list[str] = []
        links = 0
        while todo:
            comp = next_component(todo, done)
            if comp is None:
                continue
            rel = "/".join(done)
            child = f"{rel}/{comp}" if rel else comp
            if child in self.dirs:
                done.append(comp)
                continue
            st = self._upper_lstat(child)
            lower: tuple[os.stat_result, str, tuple[int, ...]] | None = None
            whiteout = st is not None and self.lowers and is_whiteout_node(st)
            if whiteout:
                st = None  # deleted in this layer: absent
            elif st is None and self.lowers:
                lower = self._lower_lookup(rel, child)
                if lower is not None:
                    st = lower[0]
            path = self._paths.path(child)
            if st is None:
                if whiteout:
                    os.unlink(path)  # the new directory replaces the whiteout
                os.mkdir(path, 0o755)
                os.chown(path, *self.owner, follow_symlinks=False)
                os.chmod(path, 0o755)
                self._merged[child] = ()
            elif stat.S_ISDIR(st.st_mode):
                if lower is not None:
                    self._copy_up_dir(child, st, lower[1], lower[2])
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(lower[1] if lower is not None else path)
                links = self._follow(todo, done, target, links=links, name=name, where=child)
                continue
            else:
                raise InvalidArchive(f"tar entry {name!r}: its parent {child!r} is not a directory")
            self.dirs.add(child)
            done.append(comp)
        return "/".join(done)

    def _lookup(self, components: list[str], name: str) -> str | None:
        """Resolve `components` in the merged view without creating anything; None when something is missing."""
        todo = components[::-1]
        done: list[str] = []
        links = 0
        while todo:
            comp = next_component(todo, done)
            if comp is None:
                continue
            child = "/".join([*done, comp])
            if child in self.dirs:
                done.append(comp)
                continue
            kind, target = self.kind(child)
            if kind is None:
                return None
            if kind == "link":
                links = self._follow(todo, done, target, links=links, name=name, where=child)
                continue
            if kind != "dir":
                raise InvalidArchive(f"tar entry {name!r}: its parent {child!r} is not a directory")
            done.append(comp)
        return "/".join(done)

    def lower_path(self, rel: str) -> str | None:
        """The path of the lower entry visible at the resolved path `rel` when the upper directory has none."""
        if not self.lowers or self._upper_lstat(rel) is not None:
            return None
        found = self._lower_lookup(rel.rpartition("/")[0], rel)
        return None if found is None else found[1]

    def lower_names(self, rel: str) -> list[str]:
        """The names the lower layers show in the resolved directory `rel` (whiteouts and opaque dirs honoured)."""
        names: dict[str, bool] = {}
        for index in self._merged_into(rel):
            directory = self._lower_paths[index].path(rel)
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name not in names:
                        names[entry.name] = not is_whiteout_node(entry.stat(follow_symlinks=False))
        return [name for name, visible in names.items() if visible]

    def kind(self, rel: str) -> tuple[str | None, str]:
        """What the merged view has at the resolved path `rel`: ("dir" | "link" | "other" | None, link target)."""
        st = self._upper_lstat(rel)
        path = self._paths.path(rel)
        if self.lowers and (st is None or is_whiteout_node(st)):
            if st is not None:
                return None, ""
            lower = self._lower_lookup(rel.rpartition("/")[0], rel)
            if lower is None:
                return None, ""
            st, path = lower[0], lower[1]
        if st is None:
            return None, ""
        if stat.S_ISDIR(st.st_mode):
            return "dir", ""
        if stat.S_ISLNK(st.st_mode):
            return "link", os.readlink(path)
        return "other", ""

    def _merged_into(self, rel: str) -> tuple[int, ...]:
        """Indexes of the lower directories that merge into the resolved directory `rel` (walked from the root)."""
        known = self._merged.get(rel)
        if known is not None:
            return known
        layers = self._merged[""]
        done = ""
        for comp in rel.split("/"):
            child = f"{done}/{comp}" if done else comp
            known = self._merged.get(child)
            if known is None:
                known = ()
                st = self._upper_lstat(child)
                if st is None or (stat.S_ISDIR(st.st_mode) and not self._opaque(self._paths.path(child))):
                    found = self._lower_lookup(done, child, layers)
                    if found is not None:
                        known = found[2]
                self._merged[child] = known
            layers = known
            done = child
        return layers

    def forget(self, rel: str) -> None:
        """Forget what is known about `rel` and everything below it (it was removed or replaced)."""
        self._aliases.clear()
        self._paths.forget(rel)
        below = f"{rel}/"
        if rel in self.dirs:
            self.dirs.difference_update([d for d in self.dirs if d == rel or d.startswith(below)])
        for key in [k for k in self._merged if k == rel or k.startswith(below)]:
            del self._merged[key]
