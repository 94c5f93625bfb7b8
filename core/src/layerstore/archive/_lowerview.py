"""Overlay: the read-only lower directories under an upper directory, seen merged as the kernel shows them.

An extraction in the overlay format writes into an upper directory over lower
directories (top first).  A path shows the upper entry when there is one,
else the topmost lower entry; a whiteout (a 0/0 character device) hides what
is below it, and a directory merges with the directories at the same path
further down until one of them is opaque (it carries the opaque xattr) or a
non-directory ends the merge.  `LowerView` answers those lookups, remembers
for each resolved directory which lower directories merge into it, and
starts the upper directories that extend a lower one; `copy_up_file` copies
a lower file up (a hardlink to it needs it in the upper directory).  Resolution itself
(links, the cache of directories) is `layerstore.archive._safepath.SafeTree`.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from ..longpaths import ShortPaths
from ..xattrs import get_xattr, list_xattrs
from .whiteouts import OVERLAY_XATTR_PREFIXES

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["NOT_FOUND", "LowerView", "copy_up_file", "is_whiteout_node"]

#: What `os.lstat` raises for a path that is not there (or whose parent is not a directory).
NOT_FOUND = (FileNotFoundError, NotADirectoryError)

#: A lower entry: its stat, its path, and the lower directories merging below it (directories only).
LowerEntry = tuple[os.stat_result, str, tuple[int, ...]]


def is_whiteout_node(st: os.stat_result) -> bool:
    """True for an overlayfs whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def copy_up_file(source: str, dest: str, skip_xattrs: tuple[str, ...]) -> os.stat_result:
    """Copy the lower non-directory `source` to the upper path `dest` with its metadata; return dest's stat.

    Content, link target or device number, xattrs (except those starting
    with one of `skip_xattrs`), owner, mode and times are kept.
    """
    st = os.lstat(source)
    if stat.S_ISREG(st.st_mode):
        import shutil  # a copy-up is rare; shutil (bz2, lzma) would cost every import ~1 ms

        shutil.copyfile(source, dest, follow_symlinks=False)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), dest)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dest, 0o600)
    else:
        os.mknod(dest, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
    for key in list_xattrs(source):
        if not key.startswith(skip_xattrs):
            os.setxattr(dest, key, get_xattr(source, key), follow_symlinks=False)
    os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return os.lstat(dest)


class LowerView:
    """The lower directories `lowers` (top first) under the upper directory whose paths `upper` hands out.

    `opaque_xattr` is the xattr that marks an opaque directory (``""``: none
    is honoured).  Paths are relative and already resolved (no links on the
    way).  Holds descriptors for deep paths: `close` releases them.
    """

    def __init__(self, lowers: Sequence[str], upper: ShortPaths, opaque_xattr: str) -> None:
        self.dirs = [lower.rstrip("/") for lower in lowers]
        # Paths below PATH_MAX for every entry, however deep (see layerstore.longpaths).
        self._paths = [ShortPaths(lower) for lower in self.dirs]
        self._upper = upper
        self._opaque_xattr = opaque_xattr
        # Resolved directory -> indexes of the lower directories that merge into it.
        self._merged: dict[str, tuple[int, ...]] = {"": tuple(range(len(self.dirs)))}

    def trim(self) -> None:
        """Between entries: bound the descriptors held for deep lower paths."""
        for lower in self._paths:
            lower.trim()

    def close(self) -> None:
        """Release the descriptors held for deep lower paths."""
        for lower in self._paths:
            lower.close()

    def lookup(self, parent: str, rel: str, layers: tuple[int, ...] | None = None) -> LowerEntry | None:
        """The topmost lower entry at `rel` (in the lowers merging into `parent`, or `layers`), or None.

        None also when a whiteout hides it.
        """
        if layers is None:
            layers = self.merged_into(parent)
        for pos, index in enumerate(layers):
            path = self._paths[index].path(rel)
            try:
                st = os.lstat(path)
            except NOT_FOUND:
                continue
            if is_whiteout_node(st):
                return None
            below: tuple[int, ...] = ()
            if stat.S_ISDIR(st.st_mode):
                merging = [index]
                if not self.is_opaque(path):
                    for other in layers[pos + 1 :]:
                        try:
                            other_path = self._paths[other].path(rel)
                            other_st = os.lstat(other_path)
                        except NOT_FOUND:
                            continue
                        if not stat.S_ISDIR(other_st.st_mode):
                            break  # a whiteout or a non-directory ends the merge
                        merging.append(other)
                        if self.is_opaque(other_path):
                            break
                below = tuple(merging)
            return st, path, below
        return None

    def is_opaque(self, path: str) -> bool:
        """Whether the directory `path` carries the opaque mark."""
        if not self._opaque_xattr:
            return False
        try:
            return get_xattr(path, self._opaque_xattr) == b"y"
        except OSError:
            return False

    def copy_up_dir(self, rel: str, lower_st: os.stat_result, lower_path: str, below: tuple[int, ...]) -> None:
        """Create upper directory `rel` with the owner, mode and xattrs of the lower directory it extends."""
        path = self._upper.path(rel)
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

    def mark_new(self, rel: str) -> None:
        """Record that the upper directory `rel` was created without a lower directory under it."""
        self._merged[rel] = ()

    def names(self, rel: str) -> list[str]:
        """The names the lower layers show in the resolved directory `rel` (whiteouts and opaque dirs honoured)."""
        names: dict[str, bool] = {}
        for index in self.merged_into(rel):
            directory = self._paths[index].path(rel)
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name not in names:
                        names[entry.name] = not is_whiteout_node(entry.stat(follow_symlinks=False))
        return [name for name, visible in names.items() if visible]

    def merged_into(self, rel: str) -> tuple[int, ...]:
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
                upper = self._upper.path(child)
                try:
                    st: os.stat_result | None = os.lstat(upper)
                except NOT_FOUND:
                    st = None
                if st is None or (stat.S_ISDIR(st.st_mode) and not self.is_opaque(upper)):
                    found = self.lookup(done, child, layers)
                    if found is not None:
                        known = found[2]
                self._merged[child] = known
            layers = known
            done = child
        return layers

    def forget(self, rel: str) -> None:
        """Forget what is known about the directory `rel` and everything below it (it was removed or replaced)."""
        below = f"{rel}/"
        for key in [k for k in self._merged if k == rel or k.startswith(below)]:
            del self._merged[key]
