"""Extract a layer tar into a layer directory (Docker's applyLayer, made strict).

Every entry replaces what was at its path (a directory over a directory
merges), ownership is mapped to host IDs, modes, times and xattrs are kept,
directory times are restored after their contents, and canonical whiteouts
either delete lower content ("delete" format, full-copy drivers) or become
overlayfs whiteouts ("overlay" format).  Unsafe entries are refused with
`InvalidArchive` naming the entry; nothing is ever written through a
symbolic link or outside the layer.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidArchive, LayerStoreError, StorageFull
from ..idtools import IDMappings
from ._safepath import SafeTree, remove_path, split_name
from .tarstream import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, TarEntry, TarReader
from .whiteouts import OPAQUE, OVERLAY_OPAQUE_VALUE, OVERLAY_XATTR_PREFIXES, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["WHITEOUT_FORMATS", "apply_tar"]

WHITEOUT_FORMATS: tuple[str, ...] = ("delete", "overlay")

_log = logging.getLogger(__name__)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_ACL_DEFAULT = "system.posix_acl_default"
_NO_XATTR = frozenset({errno.ENODATA, errno.EOPNOTSUPP})
_ARCHIVE_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EINVAL,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.EMLINK,
        errno.ENOTEMPTY,
        errno.EXDEV,
    }
)


class _Extraction:
    """State of one `apply_tar` call."""

    def __init__(
        self, reader: TarReader, root: str, maps: IDMappings, whiteout_format: str, overlay_prefix: str
    ) -> None:
        self.reader = reader
        self.maps = maps
        self.tree = SafeTree(root, maps.root_pair)
        self.overlay = whiteout_format == "overlay"
        self.overlay_prefix = overlay_prefix
        self.skip_xattrs = tuple({*OVERLAY_XATTR_PREFIXES, overlay_prefix})
        self.owners: dict[tuple[int, int], tuple[int, int]] = {}
        self.created: set[str] = set()
        self.dir_times: dict[str, tuple[int, int]] = {}
        self.opaque: list[str] = []
        self.umask = _current_umask()
        self.creds = (os.geteuid(), os.getegid())
        # Directories known (True) to give new files exactly the mode and owner
        # os.open asks for: not setgid, no default ACL.  Cleared when a directory goes.
        self.plain_dirs: dict[str, bool] = {}
        self.total = 0
        self.handlers: dict[str, Callable[[TarEntry, str, str], None]] = {
            REGULAR: self._regular,
            DIRECTORY: self._directory,
            SYMLINK: self._symlink,
            HARDLINK: self._hardlink,
            CHARDEV: self._node,
            BLOCKDEV: self._node,
            FIFO: self._node,
        }

    # -- helpers -------------------------------------------------------------

    def owner(self, entry: TarEntry) -> tuple[int, int]:
        key = (entry.uid, entry.gid)
        found = self.owners.get(key)
        if found is None:
            try:
                found = self.maps.to_host(*key)
            except InvalidArchive as exc:
                raise InvalidArchive(
                    f"tar entry {entry.name!r}: {exc}; extend the ID maps or fix the archive"
                ) from None
            self.owners[key] = found
        return found

    def xattrs(self, entry: TarEntry, target: int | str) -> None:
        follow = not isinstance(target, str)
        for key, value in entry.xattrs.items():
            if key.startswith(self.skip_xattrs):
                continue
            try:
                os.setxattr(target, key, value, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise
                _log.warning("xattr %s of %r not kept: the filesystem does not support it", key, entry.name)

    def times(self, entry: TarEntry) -> tuple[int, int]:
        mtime = entry.mtime_ns
        return (entry.atime_ns if entry.atime_ns is not None else mtime, mtime)

    def make_room(self, rel: str, path: str) -> None:
        """Remove whatever is at `path` (an entry replaces it)."""
        is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        remove_path(path, is_dir)
        if is_dir:
            self.forget(rel)

    def plain_dir(self, rel: str) -> bool:
        """Whether a file created in directory `rel` gets exactly the requested mode and our own owner."""
        found = self.plain_dirs.get(rel)
        if found is None:
            path = self.tree.path(rel)
            found = not os.lstat(path).st_mode & stat.S_ISGID
            if found:
                try:
                    os.getxattr(path, _ACL_DEFAULT, follow_symlinks=False)
                except OSError as exc:
                    found = exc.errno in _NO_XATTR
                else:
                    found = False
            self.plain_dirs[rel] = found
        return found

    def forget(self, rel: str) -> None:
        self.plain_dirs.clear()
        self.tree.forget(rel)
        if self.dir_times:
            below = f"{rel}/"
            for key in [k for k in self.dir_times if k == rel or k.startswith(below)]:
                del self.dir_times[key]

    # -- entry kinds ---------------------------------------------------------

    def _regular(self, entry: TarEntry, rel: str, path: str) -> None:
        mode = entry.mode
        owner = self.owners.get((entry.uid, entry.gid)) or self.owner(entry)
        # Skip fchown/fchmod when os.open already gives the file its final owner and
        # mode: no special bits, nothing the umask removes, no xattrs (an ACL may
        # change the mode), in a directory that is not setgid and has no default ACL.
        umask = self.umask
        plain = (
            umask is not None
            and not mode & (umask | 0o7000)
            and not entry.xattrs
            and self.plain_dir(rel.rpartition("/")[0])
        )
        create_mode = mode if plain else 0o600
        try:
            fd = os.open(path, _FILE_FLAGS, create_mode)
        except FileExistsError:
            self.make_room(rel, path)
            fd = os.open(path, _FILE_FLAGS, create_mode)
        try:
            self.reader.copy_to(fd, path)
            if not plain or owner != self.creds:
                os.fchown(fd, owner[0], owner[1])
            if not plain:
                os.fchmod(fd, mode)
            if entry.xattrs:
                self.xattrs(entry, fd)
            mtime = entry.mtime_ns
            atime = entry.atime_ns
            os.utime(fd, ns=(mtime if atime is None else atime, mtime))
        finally:
            os.close(fd)
        self.total += entry.size

    def _directory(self, entry: TarEntry, rel: str, path: str) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
                os.mkdir(path, 0o700)
        self.tree.dirs.add(rel)
        self._dir_attributes(entry, rel, path)

    def _dir_attributes(self, entry: TarEntry, rel: str, path: str) -> None:
        self.plain_dirs.pop(rel, None)  # its mode and xattrs change now
        os.chown(path, *self.owner(entry), follow_symlinks=False)
        os.chmod(path, entry.mode)
        if entry.xattrs:
            self.xattrs(entry, path)
        self.dir_times[rel] = self.times(entry)

    def _symlink(self, entry: TarEntry, rel: str, path: str) -> None:
        try:
            os.symlink(entry.linkname, path)
        except FileExistsError:
            self.make_room(rel, path)
            os.symlink(entry.linkname, path)
        os.chown(path, *self.owner(entry), follow_symlinks=False)
        if entry.xattrs:
            self.xattrs(entry, path)
        os.utime(path, ns=self.times(entry), follow_symlinks=False)

    def _hardlink(self, entry: TarEntry, rel: str, path: str) -> None:
        name = entry.name
        target = entry.linkname
        parts = split_name(target, f"hardlink target of tar entry {name!r}:")
        if not parts:
            raise InvalidArchive(f"tar entry {name!r} is a hardlink to the layer root, which is refused")
        parent = self.tree.parent(parts, name, create=False)
        if parent is None:
            raise InvalidArchive(f"tar entry {name!r} is a hardlink to {target!r}, which does not exist in the layer")
        target_rel = f"{parent}/{parts[-1]}" if parent else parts[-1]
        target_path = self.tree.path(target_rel)
        try:
            target_st = os.lstat(target_path)
        except FileNotFoundError:
            raise InvalidArchive(
                f"tar entry {name!r} is a hardlink to {target!r}, which does not exist in the layer"
            ) from None
        if stat.S_ISDIR(target_st.st_mode):
            raise InvalidArchive(f"tar entry {name!r} is a hardlink to the directory {target!r}, which is refused")
        try:
            os.link(target_path, path, follow_symlinks=False)
        except FileExistsError:
            existing = os.lstat(path)
            if (existing.st_dev, existing.st_ino) == (target_st.st_dev, target_st.st_ino):
                return
            self.make_room(rel, path)
            os.link(target_path, path, follow_symlinks=False)

    def _node(self, entry: TarEntry, rel: str, path: str) -> None:
        kind = entry.kind
        try:
            if kind is FIFO:
                self._retry(os.mkfifo, rel, path, 0o600)
            else:
                ftype = stat.S_IFCHR if kind is CHARDEV else stat.S_IFBLK
                device = os.makedev(entry.devmajor, entry.devminor)
                self._retry(lambda p: os.mknod(p, ftype | 0o600, device), rel, path)
        except PermissionError:
            raise InvalidArchive(
                f"tar entry {entry.name!r} is a device node, but this process may not create device nodes "
                "(it lacks CAP_MKNOD); import as a privileged user or remove the device from the archive"
            ) from None
        os.chown(path, *self.owner(entry), follow_symlinks=False)
        os.chmod(path, entry.mode)
        if entry.xattrs:
            self.xattrs(entry, path)
        os.utime(path, ns=self.times(entry), follow_symlinks=False)

    def _retry(self, make: Callable[..., None], rel: str, path: str, *args: int) -> None:
        try:
            make(path, *args)
        except FileExistsError:
            self.make_room(rel, path)
            make(path, *args)

    # -- whiteouts -------------------------------------------------------------

    def whiteout(self, entry: TarEntry, parts: list[str]) -> None:
        base = parts[-1]
        name = entry.name
        if base == OPAQUE:
            parent = self.tree.parent(parts, name, create=self.overlay)
            if parent is None:
                return  # the directory does not exist: there is nothing below to hide
            if self.overlay:
                os.setxattr(
                    self.tree.path(parent), f"{self.overlay_prefix}opaque", OVERLAY_OPAQUE_VALUE, follow_symlinks=False
                )
            else:
                self.opaque.append(parent)
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
            self._retry(lambda p: os.mknod(p, stat.S_IFCHR, 0), rel, path)
            os.chown(path, *self.owner(entry), follow_symlinks=False)
            self.created.add(rel)
            return
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            return
        remove_path(path, is_dir)
        if is_dir:
            self.forget(rel)

    def prune_opaque(self) -> None:
        """Remove from each opaque directory everything this archive did not create."""
        keep = set(self.created)
        for rel in self.created:
            while True:
                rel = rel.rpartition("/")[0]
                if not rel or rel in keep:
                    break
                keep.add(rel)
        for rel in self.opaque:
            if rel in self.tree.dirs:
                self._prune(rel, keep)

    def _prune(self, rel: str, keep: set[str]) -> None:
        with os.scandir(self.tree.path(rel)) as it:
            children = list(it)
        for child in children:
            child_rel = f"{rel}/{child.name}" if rel else child.name
            is_dir = child.is_dir(follow_symlinks=False)
            if child_rel in keep:
                if is_dir:
                    self._prune(child_rel, keep)
                continue
            remove_path(child.path, is_dir)
            if is_dir:
                self.forget(child_rel)

    # -- driver ----------------------------------------------------------------

    def run(self) -> int:
        tree = self.tree
        handlers = self.handlers
        created = self.created
        for entry in self.reader:
            name = entry.name
            try:
                parts = split_name(name)
                if not parts:
                    if entry.kind is not DIRECTORY:
                        raise InvalidArchive(f"tar entry {name!r} names the layer root but is not a directory")
                    self._dir_attributes(entry, "", tree.root)
                    continue
                if ".wh." in name:
                    if parts[-1].startswith(WHITEOUT_PREFIX):
                        self.whiteout(entry, parts)
                        continue
                    if any(p.startswith(WHITEOUT_META_PREFIX) for p in parts):
                        continue
                parent = tree.parent(parts, name, create=True)
                rel = f"{parent}/{parts[-1]}" if parent else parts[-1]
                handlers[entry.kind](entry, rel, tree.path(rel))
                created.add(rel)
            except OSError as exc:
                raise _os_error(exc, name) from exc
        try:
            if self.opaque:
                self.prune_opaque()
            for rel, times in self.dir_times.items():
                os.utime(tree.path(rel), ns=times, follow_symlinks=False)
        except OSError as exc:
            raise _os_error(exc, "") from exc
        return self.total


def _current_umask() -> int | None:
    """The process umask from /proc (reading it with os.umask would briefly change it), or None."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line[6:].strip(), 8)
    except (OSError, ValueError):
        pass
    return None


def _os_error(exc: OSError, name: str) -> LayerStoreError:
    where = exc.filename if exc.filename is not None else name
    if exc.errno in _FULL:
        return StorageFull(
            f"no space left on the layer's storage writing {where!r}: {exc.strerror}; free space or raise the quota"
        )
    what = f"tar entry {name!r}" if name else "layer directory"
    if exc.errno in _ARCHIVE_ERRNOS:
        return InvalidArchive(f"cannot extract {what}: {exc.strerror} ({where})")
    return LayerStoreError(f"cannot extract {what}: {exc.strerror} ({where})")


def apply_tar(
    stream: BinaryIO,
    dest: str | os.PathLike[str],
    *,
    id_maps: IDMappings | None = None,
    whiteout_format: str = "delete",
    overlay_xattr_prefix: str = "trusted.overlay.",
) -> int:
    """Extract the uncompressed layer tar `stream` into the existing directory `dest`; return the regular files' size.

    The result is the sum of the sizes of the regular files in the tar
    (hardlinks not counted).  Ownership is mapped through
    ``id_maps.to_host``; parents without entries are created 0755 owned by
    ``id_maps.root_pair``.  `whiteout_format` "delete" makes canonical
    whiteouts remove lower content from `dest`; "overlay" turns them into
    overlayfs whiteouts (0/0 character devices, ``<overlay_xattr_prefix>opaque``
    = ``y``).  The stream is read to its end.  Unsafe, corrupt or truncated
    input raises `InvalidArchive` naming the entry; a full disk `StorageFull`.
    """
    if whiteout_format not in WHITEOUT_FORMATS:
        raise ValueError(f"whiteout_format must be one of {', '.join(WHITEOUT_FORMATS)}, not {whiteout_format!r}")
    root = os.fspath(dest)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise LayerStoreError(f"cannot extract into {root}: not a directory")
    except FileNotFoundError:
        raise LayerStoreError(f"cannot extract into {root}: it does not exist") from None
    maps = id_maps if id_maps is not None else IDMappings()
    extraction = _Extraction(TarReader(stream), root, maps, whiteout_format, overlay_xattr_prefix)
    return extraction.run()
