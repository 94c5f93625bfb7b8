"""Writing one tar entry at its resolved place: files, directories, links and nodes, with their metadata.

`EntryWriters.by_kind` maps each tar entry type to its writer: regular
files (sparse ones with their holes), directories, symbolic links, hardlinks,
character and block devices, and FIFOs.  A writer replaces whatever is at
the place (see `layerstore.archive._written`; a directory over a directory
merges) and gives the entry its owner (mapped to host IDs), mode, xattrs
and times; a directory's times are only recorded, for the extraction to set
once its contents are written.  xattrs of the overlay filesystem itself are
never taken from an archive.  In an overlay upper directory a hardlink to a
file only a lower layer has copies that file up first.

The usual regular file (plain mode, our own owner, no xattrs, in a directory
that is not setgid and has no default ACL) costs one ``open``, the copy and
one ``utime``: the open already gives it its final owner and mode.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING

from ..errors import InvalidArchive
from ..longpaths import PATH_LIMIT
from ..xattrs import has_xattr
from . import _accel
from ._filepool import SMALL_FILE, FilePool, PendingFile
from ._lowerview import copy_up_file, is_whiteout_node
from ._membername import split_name
from .tarstream import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, TarEntry, TarReader
from .whiteouts import OVERLAY_OPAQUE_VALUE, OVERLAY_XATTR_PREFIXES

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..idtools import IDMappings
    from ._written import Written

__all__ = ["EntryWriters"]

_log = logging.getLogger(__name__)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ACL_DEFAULT = "system.posix_acl_default"


class EntryWriters:
    """The writers of one extraction: `reader` supplies file contents, `written` is the extraction's record.

    `overlay_prefix` is the overlay xattr namespace (``trusted.overlay.``);
    `overlay` says whether the tree is an overlay upper directory.  `total`
    sums the sizes of the regular files written.
    """

    def __init__(
        self, reader: TarReader, written: Written, maps: IDMappings, overlay_prefix: str, overlay: bool
    ) -> None:
        self.reader = reader
        self.written = written
        self.tree = written.tree
        self.maps = maps
        self.overlay = overlay
        self.overlay_prefix = overlay_prefix
        self.skip_xattrs = tuple({*OVERLAY_XATTR_PREFIXES, overlay_prefix})
        self.owners: dict[tuple[int, int], tuple[int, int]] = {}
        # The record's own dictionaries, used directly on the per-entry path.
        self.contents = written.contents
        self.plain_dirs = written.plain_dirs
        self.dir_times = written.dir_times
        self.umask = _current_umask()
        self.creds = (os.geteuid(), os.getegid())
        self.total = 0
        #: Threads for small new files (`layerstore.archive._filepool`), or None: every file written here.
        self.pool: FilePool | None = None
        #: Tar entry type -> writer(entry, resolved relative path, path to write at).
        self.by_kind: dict[str, Callable[[TarEntry, str, str], None]] = {
            REGULAR: self.regular,
            DIRECTORY: self.directory,
            SYMLINK: self.symlink,
            HARDLINK: self.hardlink,
            CHARDEV: self.node,
            BLOCKDEV: self.node,
            FIFO: self.node,
        }

    # -- metadata ----------------------------------------------------------------

    def owner(self, entry: TarEntry) -> tuple[int, int]:
        """The host (uid, gid) of `entry`; `InvalidArchive` naming it when the ID maps have no place for it."""
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
        """Set the entry's xattrs on the descriptor or (not followed) path `target`, except the overlay's own."""
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
        """(atime, mtime) in ns for ``os.utime``; the atime is the mtime when the entry has none."""
        mtime = entry.mtime_ns
        return (entry.atime_ns if entry.atime_ns is not None else mtime, mtime)

    def plain_dir(self, rel: str) -> bool:
        """Whether a file created in directory `rel` gets exactly the requested mode and our own owner."""
        found = self.plain_dirs.get(rel)
        if found is None:
            path = self.tree.path(rel)
            found = not os.lstat(path).st_mode & stat.S_ISGID
            if found:
                try:
                    found = not has_xattr(path, _ACL_DEFAULT)
                except OSError:
                    found = False
            self.plain_dirs[rel] = found
        return found

    def dir_attributes(self, entry: TarEntry, rel: str, path: str) -> None:
        """Give the directory `path` the entry's owner, mode and xattrs; record its times for the end."""
        self.plain_dirs.pop(rel, None)  # its mode and xattrs change now
        os.chown(path, *self.owner(entry), follow_symlinks=False)
        os.chmod(path, entry.mode)
        if entry.xattrs:
            self.xattrs(entry, path)
        self.dir_times[rel] = self.times(entry)

    def _replaces(self, rel: str) -> bool:
        """Whether an entry at `rel` replaces something this archive already put there."""
        return rel in self.written.created or rel in self.tree.dirs

    # -- entry kinds -------------------------------------------------------------

    def regular(self, entry: TarEntry, rel: str, path: str) -> None:
        """A regular or sparse file, its content copied from the reader."""
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
        pool = self.pool
        if pool is not None:
            replaces = self._replaces(rel)
            if (
                not replaces
                and plain  # `open` gives the final mode: nothing is left to do but the content and the times
                and owner == self.creds
                and entry.size <= SMALL_FILE
                and entry.sparse is None
                and path == f"{self.tree.root}/{rel}"  # not a descriptor-relative path (deep trees), which can go stale
            ):
                if entry.size:
                    self.contents[rel] = (entry.name, self.reader.index)
                data = self.reader.read_payload() if entry.size else b""
                pool.add(rel, PendingFile(path, entry.name, data, create_mode, self.times(entry)))
                self.total += entry.size
                return
            if replaces:
                pool.settle()  # what it replaces may hold files still in the pool
        try:
            fd = os.open(path, _FILE_FLAGS, create_mode)
        except FileExistsError:
            self.written.make_room(rel, path)
            fd = os.open(path, _FILE_FLAGS, create_mode)
        if entry.size:
            self.contents[rel] = (entry.name, self.reader.index)
        try:
            if entry.sparse is None:
                self.reader.copy_to(fd, path)
            else:
                self.reader.copy_sparse_to(fd, entry.sparse, entry.size, path)
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

    def plain_run_taker(self) -> Callable[[], None] | None:
        """A function that takes the run of plain small files at the reader's position in one native call, or None.

        Only with the file pool (a new layer), the umask known and
        ``layerstore-accel``'s ``take_plain_files`` installed.  The members it
        takes are exactly those `regular` would hand to the pool as they are
        (it tests them against the same sets and dictionaries); it stops at
        any other member, which the extraction then takes entry by entry.
        """
        take = _accel.take_plain_files
        pool = self.pool
        root = self.tree.root
        if take is None or pool is None or self.umask is None or root == "/":
            return None
        prefix = f"{root}/"
        context = (
            SMALL_FILE,
            PATH_LIMIT - len(os.fsencode(prefix)),  # the pool only gets paths that need no directory descriptor
            prefix,
            self.tree.dirs,
            self.written.created,
            self.plain_dirs,
            self.owners,
            self.creds,
            self.umask | 0o7000,
            self.contents,
            PendingFile,
        )
        reader = self.reader
        written = self.written

        def take_run() -> None:
            run = reader.take_run(take, *context)
            if run is not None:
                pool.add_all(run[2])
                self.total += run[3]
                written.current = run[4]

        return take_run

    def directory(self, entry: TarEntry, rel: str, path: str) -> None:
        """A directory: an existing one is kept (its contents merge), anything else is replaced."""
        if self.pool is not None and rel in self.pool.pending:
            self.pool.settle()  # it replaces a file still in the pool
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                self.written.keep_content(rel, stat.S_ISLNK(mode))
                os.unlink(path)
                if stat.S_ISLNK(mode):
                    self.written.forget(rel)
                os.mkdir(path, 0o700)
                if self.overlay and stat.S_ISCHR(mode):
                    # It replaces a whiteout of this layer: nothing of the lower directory shows through.
                    os.setxattr(path, f"{self.overlay_prefix}opaque", OVERLAY_OPAQUE_VALUE, follow_symlinks=False)
        self.tree.dirs.add(rel)
        self.dir_attributes(entry, rel, path)

    def symlink(self, entry: TarEntry, rel: str, path: str) -> None:
        """A symbolic link (its target is kept as it is, never followed here)."""
        if self.pool is not None and self._replaces(rel):
            self.pool.settle()  # what it replaces may hold files still in the pool
        try:
            os.symlink(entry.linkname, path)
        except FileExistsError:
            self.written.make_room(rel, path)
            os.symlink(entry.linkname, path)
        os.chown(path, *self.owner(entry), follow_symlinks=False)
        if entry.xattrs:
            self.xattrs(entry, path)
        os.utime(path, ns=self.times(entry), follow_symlinks=False)

    def hardlink(self, entry: TarEntry, rel: str, path: str) -> None:
        """A hardlink to a non-directory of the layer, its target resolved like a member name."""
        name = entry.name
        target = entry.linkname
        parts = split_name(target, f"hardlink target of tar entry {name!r}:")
        if not parts:
            raise InvalidArchive(f"tar entry {name!r} is a hardlink to the layer root, which is refused")
        target_rel = self.tree.resolve_path(parts, name)
        missing = InvalidArchive(f"tar entry {name!r} is a hardlink to {target!r}, which does not exist in the layer")
        if target_rel is None:
            raise missing
        target_path = self.tree.path(target_rel)
        try:
            target_st = os.lstat(target_path)
        except FileNotFoundError:
            copied = self._copy_up_file(target_rel, name)
            if copied is None:
                raise missing from None
            target_st = copied
        if self.tree.lowers and is_whiteout_node(target_st):
            raise missing
        if stat.S_ISDIR(target_st.st_mode):
            raise InvalidArchive(f"tar entry {name!r} is a hardlink to the directory {target!r}, which is refused")
        try:
            os.link(target_path, path, follow_symlinks=False)
        except FileExistsError:
            existing = os.lstat(path)
            if (existing.st_dev, existing.st_ino) == (target_st.st_dev, target_st.st_ino):
                return
            self.written.make_room(rel, path)
            os.link(target_path, path, follow_symlinks=False)

    def _copy_up_file(self, rel: str, name: str) -> os.stat_result | None:
        """Copy a non-directory that only a lower layer has into the upper directory (overlay); None if absent."""
        kind, _ = self.tree.kind(rel)
        if kind is None or kind == "dir" or not self.tree.lowers:
            return None
        source = self.tree.lower_path(rel)
        if source is None:
            return None
        parts = rel.split("/")
        parent = self.tree.parent(parts, name, create=True)
        copied = copy_up_file(
            source, self.tree.path(f"{parent}/{parts[-1]}" if parent else parts[-1]), self.skip_xattrs
        )
        self.written.copied_up.add(rel)
        return copied

    def node(self, entry: TarEntry, rel: str, path: str) -> None:
        """A FIFO, or a character or block device (creating devices needs CAP_MKNOD)."""
        kind = entry.kind
        try:
            if kind is FIFO:
                self.written.create(os.mkfifo, rel, path, 0o600)
            else:
                ftype = stat.S_IFCHR if kind is CHARDEV else stat.S_IFBLK
                device = os.makedev(entry.devmajor, entry.devminor)
                self.written.create(lambda p: os.mknod(p, ftype | 0o600, device), rel, path)
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
