"""Extract a layer tar into a layer directory (Docker's applyLayer, made strict).

Every entry replaces what was at its path (a directory over a directory
merges), ownership is mapped to host IDs, modes, times and xattrs are kept,
directory times are restored after their contents, and canonical whiteouts
either delete lower content ("delete" format, full-copy drivers) or become
overlayfs whiteouts ("overlay" format).

Where an entry lands (the rule every driver follows): its own name must be
relative and free of ``..``, else it is refused with `InvalidArchive`.  Its
parent path is resolved inside the layer's full tree (this layer over its
lower layers), following symbolic links with the layer root as ``/``:
absolute targets start again at the layer root and ``..`` never climbs above
it, like ``openat2(RESOLVE_IN_ROOT)`` or a chroot.  The entry is written at
the resolved place and its own last component is never followed (it replaces
what is there).  Hardlink targets, whiteouts and opaque markers resolve the
same way.  Examples, with a lower layer holding ``lib -> usr/lib`` and
``abs -> /opt/real``:

- ``lib/systemd/app.service`` is written to ``usr/lib/systemd/app.service``
  and ``lib`` stays a link (merged /usr);
- ``abs/x`` lands in ``opt/real/x`` of the layer, never in the host's
  ``/opt/real`` (missing directories on the way are created 0755);
- ``lib/.wh.old`` deletes ``usr/lib/old``; ``abs/.wh..wh..opq`` makes
  ``opt/real`` opaque; a hardlink to ``lib/libc.so`` links
  ``usr/lib/libc.so``;
- ``/etc/passwd`` and ``a/../../x`` are refused.

So nothing is ever written, removed, chmod-ed or chown-ed outside the layer,
whatever a link says.  When an entry destroys content an earlier entry of
the same archive wrote (a second member of the same path, a whiteout of it,
or the removal of a link it was written through), that content is copied to
the open `layerstore.archive.aside.SetAside` first (the byte-exact export
needs it); without one the entry is refused with `InvalidArchive`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidArchive, LayerStoreError, StorageFull
from ..idtools import IDMappings
from ..xattrs import get_xattr, list_xattrs
from ._safepath import SafeTree, is_whiteout_node, remove_path, split_name
from .aside import current as current_aside
from .tarstream import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, TarEntry, TarReader
from .whiteouts import OPAQUE, OVERLAY_OPAQUE_VALUE, OVERLAY_XATTR_PREFIXES, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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
        self,
        reader: TarReader,
        root: str,
        maps: IDMappings,
        whiteout_format: str,
        overlay_prefix: str,
        *,
        lowers: Sequence[str] = (),
    ) -> None:
        self.reader = reader
        self.maps = maps
        self.overlay = whiteout_format == "overlay"
        self.tree = SafeTree(root, maps.root_pair, lowers, f"{overlay_prefix}opaque" if self.overlay else "")
        self.overlay_prefix = overlay_prefix
        self.skip_xattrs = tuple({*OVERLAY_XATTR_PREFIXES, overlay_prefix})
        self.owners: dict[tuple[int, int], tuple[int, int]] = {}
        self.created: set[str] = set()
        # Regular files with content written by this archive, and links its entries
        # were resolved through: the export reads them back by member name.
        self.contents: dict[str, tuple[str, int]] = {}
        self.opaque_root = False
        self.current = ""
        self.copied_up: set[str] = set()  # overlay: lower files copied into the upper dir for a hardlink
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
        mode = os.lstat(path).st_mode
        is_dir = stat.S_ISDIR(mode)
        self.keep_content(rel, is_dir or stat.S_ISLNK(mode))
        remove_path(path, is_dir)
        if is_dir or stat.S_ISLNK(mode):
            self.forget(rel)

    def keep_content(self, rel: str, tree: bool) -> None:
        """Before `rel` goes: keep aside the content this archive wrote there (or below it, or through it: `tree`).

        Without a `SetAside` open, refuse instead: the export would miss it.
        """
        if not self.contents:
            return
        doomed = [rel] if rel in self.contents else []
        if tree:
            below = f"{rel}/"
            doomed += [r for r in self.contents if r.startswith(below)]
            links = self.tree.traversed
            if any(link == rel or link.startswith(below) for link in links):
                # Names written through the link no longer lead to their files.
                doomed += [r for r, (name, _) in self.contents.items() if split_name(name) != r.split("/")]
        if not doomed:
            return
        aside = current_aside()
        if aside is None:
            name = self.contents[doomed[0]][0]
            raise InvalidArchive(
                f"tar entry {self.current!r} would remove {rel!r}, which holds content of the earlier entry "
                f"{name!r} of the same layer; the layer could not be exported byte for byte, "
                "so it is refused (remove one of the two entries)"
            )
        for doomed_rel in dict.fromkeys(doomed):
            _, index = self.contents.pop(doomed_rel)
            aside.keep(index, self.tree.path(doomed_rel))

    def plain_dir(self, rel: str) -> bool:
        """Whether a file created in directory `rel` gets exactly the requested mode and our own owner."""
        found = self.plain_dirs.get(rel)
        if found is None:
            path = self.tree.path(rel)
            found = not os.lstat(path).st_mode & stat.S_ISGID
            if found:
                try:
                    get_xattr(path, _ACL_DEFAULT)
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

    def _directory(self, entry: TarEntry, rel: str, path: str) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                self.keep_content(rel, stat.S_ISLNK(mode))
                os.unlink(path)
                if stat.S_ISLNK(mode):
                    self.forget(rel)
                os.mkdir(path, 0o700)
                if self.overlay and stat.S_ISCHR(mode):
                    # It replaces a whiteout of this layer: nothing of the lower directory shows through.
                    os.setxattr(path, f"{self.overlay_prefix}opaque", OVERLAY_OPAQUE_VALUE, follow_symlinks=False)
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
            self.make_room(rel, path)
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
        dest = self.tree.path(f"{parent}/{parts[-1]}" if parent else parts[-1])
        st = os.lstat(source)
        if stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, dest, follow_symlinks=False)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), dest)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dest, 0o600)
        else:
            os.mknod(dest, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        for key in list_xattrs(source):
            if not key.startswith(self.skip_xattrs):
                os.setxattr(dest, key, get_xattr(source, key), follow_symlinks=False)
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dest, stat.S_IMODE(st.st_mode))
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        self.copied_up.add(rel)
        return os.lstat(dest)

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
            if self.overlay and not parent:
                self.opaque_root = True  # the kernel ignores an opaque upper root: see `hide_lower_root`
            elif self.overlay:
                os.setxattr(
                    self.tree.path(parent), f"{self.overlay_prefix}opaque", OVERLAY_OPAQUE_VALUE, follow_symlinks=False
                )
                self.tree.forget(parent)
                self.opaque.append(parent)
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
            kind, _ = self.tree.kind(rel)
            self.keep_content(rel, kind in ("dir", "link"))
            self._retry(lambda p: os.mknod(p, stat.S_IFCHR, 0), rel, path)
            os.chown(path, *self.owner(entry), follow_symlinks=False)
            self.created.add(rel)
            self.tree.forget(rel)
            return
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        is_dir = stat.S_ISDIR(mode)
        self.keep_content(rel, is_dir or stat.S_ISLNK(mode))
        remove_path(path, is_dir)
        if is_dir or stat.S_ISLNK(mode):
            self.forget(rel)

    def hide_lower_root(self) -> None:
        """Overlay, opaque root: whiteouts for every lower top-level entry, opaque upper directories.

        The kernel ignores the opaque mark on an upper root directory, so this
        is how the mounted tree comes to show only what this layer holds.
        """
        tree = self.tree
        with os.scandir(tree.root) as it:
            upper = {e.name: e.is_dir(follow_symlinks=False) for e in it}
        for name, is_dir in upper.items():
            if is_dir:
                os.setxattr(
                    tree.path(name), f"{self.overlay_prefix}opaque", OVERLAY_OPAQUE_VALUE, follow_symlinks=False
                )
        for name in tree.lower_names(""):
            if name not in upper:
                path = tree.path(name)
                os.mknod(path, stat.S_IFCHR, 0)
                os.chown(path, *tree.owner, follow_symlinks=False)

    def drop_copied_up(self) -> None:
        """Overlay: remove lower files copied up for hardlinks that an opaque directory now hides (as on vfs)."""
        tops = ["" if self.opaque_root else None, *self.opaque]
        for rel in self.copied_up - self.created:
            self.tree.trim()
            if any(top == "" or (top is not None and rel.startswith(f"{top}/")) for top in tops):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tree.path(rel))

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
                    self.forget(child_rel)

    # -- driver ----------------------------------------------------------------

    def run(self) -> int:
        tree = self.tree
        handlers = self.handlers
        created = self.created
        for entry in self.reader:
            name = entry.name
            self.current = name
            tree.trim()
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
            if self.copied_up:
                self.drop_copied_up()
            if self.opaque_root:
                self.hide_lower_root()
            if self.opaque and not self.overlay:
                self.prune_opaque()
            for rel, times in self.dir_times.items():
                tree.trim()
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
    lowers: Sequence[str] = (),
) -> int:
    """Extract the uncompressed layer tar `stream` into the existing directory `dest`; return the regular files' size.

    The result is the sum of the sizes of the regular files in the tar
    (hardlinks not counted).
    Ownership is mapped through ``id_maps.to_host``; parents without entries
    are created 0755 owned by ``id_maps.root_pair``.  `whiteout_format`
    "delete" makes canonical whiteouts remove lower content from `dest` (the
    layer's full tree); "overlay" turns them into overlayfs whiteouts (0/0
    character devices, ``<overlay_xattr_prefix>opaque`` = ``y``) in `dest`,
    the upper directory over the read-only directories `lowers` (top first):
    names then resolve through the merged view, upper directories needed
    below a lower directory are created with its owner, mode and xattrs,
    a hardlink to a lower file copies it up first, and an opaque root
    becomes whiteouts of every lower top-level entry.  Names resolve as the
    module docstring says (symbolic links followed inside the layer, never
    out of it).  The stream is read to its end.  Unsafe, corrupt or
    truncated input raises `InvalidArchive` naming the entry; a full disk
    `StorageFull`.
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
    extraction = _Extraction(TarReader(stream), root, maps, whiteout_format, overlay_xattr_prefix, lowers=lowers)
    try:
        return extraction.run()
    finally:
        extraction.tree.close()
