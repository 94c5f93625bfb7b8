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
link or a directory of a lower layer resolves through the merged view
(`layerstore.archive._lowerview`), and the upper directories it needs are
created with the lower directories' owner, mode and extended attributes.
Resolved directories are cached, so a parent is looked up once; whenever the
extraction removes or replaces a directory or a link, the cache forgets what
could depend on it.  The name syntax (components, ``..``, link targets) is
`layerstore.archive._membername`.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ..errors import InvalidArchive
from ..fstree import remove_tree
from ..longpaths import ShortPaths
from ._lowerview import NOT_FOUND, LowerView, is_whiteout_node
from ._membername import MAX_LINKS, next_component, push_target, split_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._filepool import FilePool
    from ._lowerview import LowerEntry

# split_name, next_component, push_target, MAX_LINKS and is_whiteout_node are re-exported:
# they were defined here before the containment code was split by concept.
__all__ = ["MAX_LINKS", "SafeTree", "is_whiteout_node", "next_component", "push_target", "remove_path", "split_name"]


def remove_path(path: str, is_dir: bool) -> None:
    """Remove a file, link or node, or a whole directory tree (iteratively) without following links."""
    if is_dir:
        remove_tree(path, missing_ok=False)
    else:
        os.unlink(path)


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
        # Paths below PATH_MAX for every entry, however deep (see layerstore.longpaths).
        self._paths = ShortPaths(self.root)
        self._lower = LowerView(lowers, self._paths, opaque_xattr)
        self.lowers = self._lower.dirs
        # Resolved real directories of the upper/layer tree (relative paths).
        self.dirs: set[str] = {""}
        # Unresolved parent path -> resolved parent path, for parents that crossed a link.
        self._aliases: dict[str, str] = {}
        self.links_followed = 0
        # Resolved path of each link an entry was resolved through -> the first such entry's name.
        self.traversed: dict[str, str] = {}
        #: The extraction's threads for small files, if any: a resolution that meets a file they
        #: have not created yet waits for them first, so it sees what the archive's order promises.
        self.pool: FilePool | None = None

    def path(self, rel: str) -> str:
        """A path of the entry at `rel` (``""`` is the root), valid until the next `trim` (see `ShortPaths`)."""
        return self._paths.path(rel)

    def trim(self) -> None:
        """Between entries: bound the directory descriptors that keep deep paths short."""
        self._paths.trim()
        if self.lowers:  # called per entry: skip the call when no lower directory holds descriptors
            self._lower.trim()

    def close(self) -> None:
        """Release the descriptors held for deep paths."""
        self._paths.close()
        self._lower.close()

    def _upper_lstat(self, rel: str) -> os.stat_result | None:
        pool = self.pool
        if pool is not None and rel in pool.pending:
            pool.settle()
        try:
            return os.lstat(self._paths.path(rel))
        except NOT_FOUND:
            return None

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
            lower: LowerEntry | None = None
            whiteout = st is not None and self.lowers and is_whiteout_node(st)
            if whiteout:
                st = None  # deleted in this layer: absent
            elif st is None and self.lowers:
                lower = self._lower.lookup(rel, child)
                if lower is not None:
                    st = lower[0]
            path = self._paths.path(child)
            if st is None:
                if whiteout:
                    os.unlink(path)  # the new directory replaces the whiteout
                os.mkdir(path, 0o755)
                os.chown(path, *self.owner, follow_symlinks=False)
                os.chmod(path, 0o755)
                self._lower.mark_new(child)
            elif stat.S_ISDIR(st.st_mode):
                if lower is not None:
                    self._lower.copy_up_dir(child, st, lower[1], lower[2])
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
        found = self._lower.lookup(rel.rpartition("/")[0], rel)
        return None if found is None else found[1]

    def lower_names(self, rel: str) -> list[str]:
        """The names the lower layers show in the resolved directory `rel` (whiteouts and opaque dirs honoured)."""
        return self._lower.names(rel)

    def kind(self, rel: str) -> tuple[str | None, str]:
        """What the merged view has at the resolved path `rel`: ("dir" | "link" | "other" | None, link target)."""
        st = self._upper_lstat(rel)
        path = self._paths.path(rel)
        if self.lowers and (st is None or is_whiteout_node(st)):
            if st is not None:
                return None, ""
            lower = self._lower.lookup(rel.rpartition("/")[0], rel)
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

    def forget(self, rel: str) -> None:
        """Forget what is known about `rel` and everything below it (it was removed or replaced)."""
        self._aliases.clear()
        self._paths.forget(rel)
        below = f"{rel}/"
        if rel in self.dirs:
            self.dirs.difference_update([d for d in self.dirs if d == rel or d.startswith(below)])
        self._lower.forget(rel)
