"""Native diff: read a layer's own diff/ directory instead of comparing trees.

The upper directory of an overlay holds exactly what a layer changed:
kernel whiteouts (0/0 character devices) for deletions, opaque directories
(``<prefix>opaque=y``) that hide everything below them, and every added or
modified entry.  Whether an entry is an addition or a modification depends on
the *parent's view*: the merged lower layers, honouring the whiteouts and
opaque directories of intermediate layers.

Every walk reaches entries through `layerstore.longpaths.ShortPaths`, so a
layer whose paths are far longer than ``PATH_MAX`` diffs like a flat one.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from layerstore.archive.changes import regular_files_size, same_attrs
from layerstore.archive.export import exported_xattrs, marker_header, member_chunks
from layerstore.archive.tarheader import END_OF_ARCHIVE
from layerstore.archive.whiteouts import OPAQUE, whiteout_name
from layerstore.change import Change, ChangeKind
from layerstore.longpaths import ShortPaths
from layerstore.xattrs import get_xattr

if TYPE_CHECKING:
    from layerstore.idtools import IDMappings

__all__ = ["Entry", "changes", "diff_size", "drop_hidden_whiteouts", "tar_chunks", "walk"]

_NS = 1_000_000_000


def is_whiteout(st: os.stat_result) -> bool:
    """True for an overlayfs kernel whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _has_opaque(path: str, prefixes: Sequence[str]) -> bool:
    for prefix in prefixes:
        try:
            if get_xattr(path, prefix + "opaque") == b"y":
                return True
        except OSError:
            continue
    return False


@attrs.frozen
class Entry:
    """One change found in the upper directory, in tar order (a directory before its contents)."""

    rel: str
    """Path relative to the layer root, without leading slash."""
    kind: ChangeKind
    path: str | None
    """The upper path whose metadata and content to export; None for a Delete or a hidden lower entry.

    It may be longer than ``PATH_MAX``: reach it through `ShortPaths` of the upper directory and `rel`.
    """
    st: os.stat_result | None
    """lstat of `path` (of the kernel whiteout for a whiteout Delete)."""
    whiteout: bool = False
    """A Delete from a kernel whiteout (exported as ``.wh.<name>``); False for entries hidden by an opaque dir."""
    opaque_marker: bool = False
    """A directory whose lower contents it really hides (exported with ``.wh..wh..opq``)."""


class _Lower:
    """The parent's view of one directory: the lower layers (top-down) whose directories merge into it."""

    __slots__ = ("dirs",)

    def __init__(self, dirs: list[ShortPaths]) -> None:
        self.dirs = dirs

    def lookup(self, rel: str, prefixes: Sequence[str]) -> tuple[os.stat_result | None, _Lower]:
        """Return the visible entry at `rel` (its stat, or None) and, if it is a directory, its own view."""
        found: os.stat_result | None = None
        below: list[ShortPaths] = []
        for d in self.dirs:
            p = d.path(rel)
            try:
                st = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if is_whiteout(st):
                break
            if found is None:
                found = st
            if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found.st_mode):
                break
            below.append(d)
            if _has_opaque(p, prefixes):
                break
        return found, _Lower(below)

    def names(self, rel: str) -> list[str]:
        """The names visible in the directory `rel` of the parent's view."""
        seen: set[str] = set()
        visible: list[str] = []
        for d in self.dirs:
            try:
                it = os.scandir(d.path(rel))
            except OSError:
                continue
            with it:
                for e in it:
                    if e.name in seen:
                        continue
                    seen.add(e.name)
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if not is_whiteout(st):
                        visible.append(e.name)
        return visible


def drop_hidden_whiteouts(root: str, prefixes: Sequence[str]) -> None:
    """Delete kernel whiteouts at or below opaque directories of the upper tree `root`.

    Below an opaque directory overlayfs reads the upper directory as it is,
    so a whiteout there would be listed (as an unreadable entry) instead of
    hiding anything; a tar may carry both ``d/.wh.x`` and ``d/.wh..wh..opq``.
    """
    with ShortPaths(root) as paths:
        stack = [("", False)]
        while stack:
            rel, hidden = stack.pop()
            paths.trim()
            path = paths.path(rel)
            hidden = hidden or _has_opaque(path, prefixes)
            with os.scandir(path) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((f"{rel}/{e.name}" if rel else e.name, hidden))
                    elif (
                        hidden
                        and not e.is_file(follow_symlinks=False)
                        and not e.is_symlink()
                        and is_whiteout(e.stat(follow_symlinks=False))
                    ):
                        os.unlink(e.path)


def walk(upper: str, lowers: Sequence[str], prefixes: Sequence[str]) -> Iterator[Entry]:
    """Yield the changes of the layer whose own directory is `upper` against the view of `lowers` (top-down).

    Iterative (an explicit stack of directories), so any depth works.
    """
    with contextlib.ExitStack() as stack:
        upper_paths = stack.enter_context(ShortPaths(upper))
        lower_paths = [stack.enter_context(ShortPaths(lower)) for lower in lowers]
        out = _walk(upper_paths, lower_paths, prefixes)
    yield from out


def _walk(upper: ShortPaths, lowers: list[ShortPaths], prefixes: Sequence[str]) -> list[Entry]:
    root = _Frame(upper, "", _Lower(lowers), hidden=False, head=None)
    stack = [root]
    while stack:
        # Between directories no path is in use: bound the descriptors kept for deep ones.
        upper.trim()
        for lower in lowers:
            lower.trim()
        frame = stack[-1]
        sub = frame.advance(upper, prefixes)
        if sub is not None:
            stack.append(sub)
            continue
        stack.pop()
        if stack:
            stack[-1].finish_child(frame)
    return root.out


class _Frame:
    """One upper directory being walked: its remaining entries and the changes found so far."""

    __slots__ = ("changed", "entries", "head", "hidden", "lower", "out", "present", "rel")

    def __init__(self, upper: ShortPaths, rel: str, lower: _Lower, *, hidden: bool, head: Entry | None) -> None:
        with os.scandir(upper.path(rel)) as it:
            names = sorted((e.name for e in it), key=os.fsencode, reverse=True)
        self.entries = names  # popped from the end: byte order
        self.rel = rel
        self.lower = lower
        self.hidden = hidden
        self.head = head
        """The entry of this directory itself, kept only if it or its contents changed."""
        self.changed = False
        """This directory's own entry differs from the parent's view (else only changes inside count)."""
        self.present: set[str] = set()
        self.out: list[Entry] = []

    def advance(self, upper: ShortPaths, prefixes: Sequence[str]) -> _Frame | None:
        """Handle entries until a subdirectory needs walking (returned); None when this directory is done."""
        # A short path of this directory: with one name appended it stays below PATH_MAX.
        dir_path = upper.path(self.rel)
        while self.entries:
            name = self.entries.pop()
            child = f"{dir_path}/{name}"
            st = os.lstat(child)
            child_rel = f"{self.rel}/{name}" if self.rel else name
            upper_path = f"{upper.root}/{child_rel}"
            if is_whiteout(st):
                if not self.hidden:
                    found, _ = self.lower.lookup(child_rel, prefixes)
                    if found is not None:
                        self.out.append(Entry(child_rel, ChangeKind.DELETE, None, st, whiteout=True))
                continue
            self.present.add(name)
            found, child_lower = self.lower.lookup(child_rel, prefixes)
            kind = ChangeKind.ADD if found is None else ChangeKind.MODIFY
            if not stat.S_ISDIR(st.st_mode):
                self.out.append(Entry(child_rel, kind, upper_path, st))
                continue
            opaque = self.hidden or _has_opaque(child, prefixes)
            lower_names = child_lower.names(child_rel) if opaque and found is not None else []
            changed = kind == ChangeKind.ADD or bool(lower_names) or found is None or not same_attrs(st, found)
            head = Entry(child_rel, kind, upper_path, st, opaque_marker=bool(lower_names) and not self.hidden)
            sub = _Frame(upper, child_rel, child_lower, hidden=opaque, head=head)
            sub.changed = changed
            return sub
        if self.hidden:
            for name in sorted(self.lower.names(self.rel), key=os.fsencode):
                if name not in self.present:
                    self.out.append(Entry(f"{self.rel}/{name}" if self.rel else name, ChangeKind.DELETE, None, None))
        return None

    def finish_child(self, child: _Frame) -> None:
        """Take the changes of the finished subdirectory `child` (with its own entry when anything changed)."""
        if child.head is not None and (child.changed or child.out):
            self.out.append(child.head)
            self.out.extend(child.out)


def changes(upper: str, lowers: Sequence[str], prefixes: Sequence[str]) -> list[Change]:
    """The `Change` list of a layer, sorted by path."""
    return sorted(Change("/" + e.rel, e.kind) for e in walk(upper, lowers, prefixes))


def diff_size(upper: str, lowers: Sequence[str], prefixes: Sequence[str]) -> int:
    """Sum of the sizes of the regular files the diff carries (each inode once, as hardlinks carry no data)."""
    return regular_files_size(e.st for e in walk(upper, lowers, prefixes) if e.path is not None)


def tar_chunks(
    upper: str, lowers: Sequence[str], prefixes: Sequence[str], id_maps: IDMappings | None
) -> Iterator[bytes]:
    """Generate an uncompressed tar of the layer's changes with canonical whiteouts, in bounded chunks."""
    links: dict[tuple[int, int], bytes] = {}
    with ShortPaths(upper) as paths:
        yield from _members(paths, walk(upper, lowers, prefixes), id_maps, links)
    yield END_OF_ARCHIVE


def _members(
    paths: ShortPaths, entries: Iterator[Entry], id_maps: IDMappings | None, links: dict[tuple[int, int], bytes]
) -> Iterator[bytes]:
    for e in entries:
        if e.kind == ChangeKind.DELETE:
            if e.whiteout:  # else hidden by an opaque directory's marker
                yield marker_header(whiteout_name(e.rel))
            continue
        st = e.st
        if e.path is None or st is None:
            continue
        paths.trim()  # the previous member is done with its path
        path = paths.path(e.rel)
        uid, gid = (st.st_uid, st.st_gid) if id_maps is None else id_maps.to_container(st.st_uid, st.st_gid)
        common: dict[str, Any] = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": uid,
            "gid": gid,
            "mtime_ns": st.st_mtime_ns // _NS * _NS,  # whole seconds
            "xattrs": exported_xattrs(path),
        }
        yield from member_chunks(path, os.fsencode(e.rel), st, common, links)
        if e.opaque_marker:
            yield marker_header(f"{e.rel}/{OPAQUE}")
