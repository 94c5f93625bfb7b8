"""Changes of a layer directory against its parent's, by walking both trees (docs/driver-guide.md).

The walks are iterative and reach entries through `ShortPaths`, so trees of
any depth (paths far beyond ``PATH_MAX``) compare like flat ones.
"""

from __future__ import annotations

import os
import stat
from operator import attrgetter
from typing import TYPE_CHECKING

from ..change import Change, ChangeKind
from ..longpaths import ShortPaths
from ..xattrs import get_xattr

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["changes_size", "regular_files_size", "same_attrs", "tree_changes"]

_ADD = ChangeKind.ADD
_MODIFY = ChangeKind.MODIFY
_DELETE = ChangeKind.DELETE
_CAPABILITY = "security.capability"
_NS = 1_000_000_000
_BY_PATH = attrgetter("path")


def _scan(path: str) -> dict[str, os.stat_result]:
    with os.scandir(path) as it:
        return {entry.name: entry.stat(follow_symlinks=False) for entry in it}


def _same_time(a: int, b: int) -> bool:
    # Archives and some filesystems keep whole seconds only: then only seconds count.
    return a == b or ((a % _NS == 0 or b % _NS == 0) and a // _NS == b // _NS)


def _capability(path: str) -> bytes | None:
    try:
        return get_xattr(path, _CAPABILITY)
    except OSError:
        return None


def same_attrs(new: os.stat_result, old: os.stat_result) -> bool:
    """True when type, mode, owner, device and mtime (whole seconds when either side has no sub-second part) agree."""
    return (
        new.st_mode == old.st_mode
        and new.st_uid == old.st_uid
        and new.st_gid == old.st_gid
        and new.st_rdev == old.st_rdev
        and _same_time(new.st_mtime_ns, old.st_mtime_ns)
    )


def _differs(new: os.stat_result, old: os.stat_result, new_path: str, old_path: str) -> bool:
    if not same_attrs(new, old):
        return True
    mode = new.st_mode
    if stat.S_ISREG(mode):
        return new.st_size != old.st_size or _capability(new_path) != _capability(old_path)
    if stat.S_ISLNK(mode):
        return new.st_size != old.st_size or os.readlink(new_path) != os.readlink(old_path)
    return False


def _add_tree(paths: ShortPaths, rel: str, out: list[Change]) -> None:
    stack = [rel]
    while stack:
        dir_rel = stack.pop()
        paths.trim()
        with os.scandir(paths.path(dir_rel)) as it:
            for entry in it:
                child = f"{dir_rel}/{entry.name}"
                out.append(Change(child, _ADD))
                if entry.is_dir(follow_symlinks=False):
                    stack.append(child)


def _compare(new_paths: ShortPaths, old_paths: ShortPaths, out: list[Change]) -> None:
    """Append the changes of the tree of `new_paths` against `old_paths`'s; iterative, so any depth works."""
    same_dirs: set[str] = set()  # directories on both sides whose own attributes agree
    stack = [""]
    while stack:
        rel = stack.pop()
        new_paths.trim()
        old_paths.trim()
        # Short directory paths: with one name appended they stay below PATH_MAX.
        new_dir = new_paths.path(rel)
        old_dir = old_paths.path(rel)
        new_entries = _scan(new_dir)
        old_entries = _scan(old_dir)
        added: list[str] = []  # new subtrees, walked once this directory is done (that may trim)
        for name, new in new_entries.items():
            child = f"{rel}/{name}"
            new_path = f"{new_dir}/{name}"
            old = old_entries.pop(name, None)
            if old is None:
                out.append(Change(child, _ADD))
                if stat.S_ISDIR(new.st_mode):
                    added.append(child)
                continue
            old_path = f"{old_dir}/{name}"
            modified = _differs(new, old, new_path, old_path)
            if modified:
                out.append(Change(child, _MODIFY))
            if stat.S_ISDIR(new.st_mode):
                if stat.S_ISDIR(old.st_mode):
                    stack.append(child)
                    if not modified:
                        same_dirs.add(child)
                else:
                    added.append(child)
        for name in old_entries:
            out.append(Change(f"{rel}/{name}", _DELETE))
        for child in added:
            _add_tree(new_paths, child, out)
    # A directory that contains changes is itself listed as Modify.  Walking up
    # stops at a directory already listed: its ancestors were handled with it.
    for change in list(out):
        parent = change.path.rpartition("/")[0]
        while parent in same_dirs:
            same_dirs.discard(parent)
            out.append(Change(parent, _MODIFY))
            parent = parent.rpartition("/")[0]


def tree_changes(layer_dir: str | os.PathLike[str], parent_dir: str | os.PathLike[str] | None) -> list[Change]:
    """Return the changes of the tree `layer_dir` against `parent_dir` (None: an empty tree), sorted by path.

    Paths start at the layer root (``/a/b``), the root itself is never
    listed.  Add for new paths (and everything below a new directory),
    Delete once for a removed subtree, Modify when the type, mode, owner,
    device, size (regular files), mtime (whole seconds when either side has
    none below), symlink target or ``security.capability`` differ; a
    directory containing changes is listed as Modify.
    """
    out: list[Change] = []
    with ShortPaths(layer_dir) as layer:
        if parent_dir is None:
            _add_tree(layer, "", out)
        else:
            with ShortPaths(parent_dir) as parent:
                _compare(layer, parent, out)
    out.sort(key=_BY_PATH)
    return out


def changes_size(layer_dir: str | os.PathLike[str], changes: Iterable[Change]) -> int:
    """Return the sum of the sizes of the regular files added or modified, each hardlinked inode once.

    This is what `apply_tar` returns for the tar `export_changes` makes of the same changes.
    """
    with ShortPaths(layer_dir) as paths:
        return regular_files_size(_lstat(paths, change.path) for change in changes if change.kind != _DELETE)


def _lstat(paths: ShortPaths, rel: str) -> os.stat_result | None:
    paths.trim()
    try:
        return os.lstat(paths.path(rel))
    except FileNotFoundError:
        return None


def regular_files_size(stats: Iterable[os.stat_result | None]) -> int:
    """Return the sum of the sizes of the regular files among `stats`, each hardlinked inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for st in stats:
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
        total += st.st_size
    return total
