"""A faithful copy of a layer tree: every file type, owner, mode, xattr, time and hardlink.

`copy_tree` is what a driver needs to start a child layer as an exact copy
of its parent when its backend has no snapshots.  Unlike `shutil.copytree`
it re-creates fifos, sockets and device nodes without opening them, keeps
owners, setuid/setgid/sticky bits, nanosecond times, extended attributes
(``security.capability`` included) and hardlink identity, and never
follows a symlink.

It walks the tree iteratively with directory descriptors (``openat`` and
friends), holding only the descriptors of the directory being copied, so a
tree 5,000 directories deep (paths far longer than ``PATH_MAX``) copies
like a flat one.  File data is copied with the cheapest method the
filesystem offers: a reflink (``FICLONE``, btrfs/xfs) shares the blocks,
``copy_file_range`` copies inside the kernel, ``sendfile`` and a read/write
loop are the fallbacks; the first file that refuses a method demotes it for
the rest of the copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator

import attrs

from layerstore.xattrs import get_xattr, list_xattrs

__all__ = ["COPY_METHODS", "TreeCopier", "copy_tree", "probe_reflink"]

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

COPY_METHODS: tuple[str, ...] = ("reflink", "copy_file_range", "sendfile", "read")
"""Data copy methods from fastest to most portable."""

# errno values meaning "this method does not work for these files", not "the copy failed".
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTTY})
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, method: str = "reflink") -> None:
    """Copy the directory `src` into the existing empty directory `dst`, the root's own attributes too.

    `method` is the first data copy method to try (see `COPY_METHODS`);
    methods the filesystem refuses are demoted automatically.  Raises
    `OSError` from the failing system call; `dst` is then partial, so copy
    into a staging directory and publish it only when this returns.
    """
    TreeCopier(method).copy_tree(os.fspath(src), os.fspath(dst))


def probe_reflink(directory: str | os.PathLike[str]) -> bool:
    """Return True if files in `directory` can be cloned with ``FICLONE`` (btrfs, xfs with reflink).

    False too when the probe files cannot be written (a full or read-only
    filesystem): a driver must still open there, e.g. to remove layers.
    """
    directory = os.fspath(directory)
    src_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-a")
    dst_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-b")
    try:
        try:
            with open(src_path, "wb") as src:
                src.write(b"x")
        except OSError:
            return False
        src_fd = os.open(src_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst_fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.ioctl(dst_fd, FICLONE, src_fd)
            except OSError:
                return False
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        return True
    finally:
        for path in (src_path, dst_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _xattrs(target: str | int, follow: bool) -> Iterator[tuple[str, bytes]]:
    try:
        names = list_xattrs(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            yield name, get_xattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed meanwhile
                raise


def _at(dir_fd: int, name: str) -> str:
    # The xattr calls take no dir_fd; this names the entry through the open
    # directory without resolving a long path (and without following `name`).
    return f"/proc/self/fd/{dir_fd}/{name}"


def _copy_xattrs(src: str | int, dst: str | int, *, follow: bool) -> None:
    for name, value in _xattrs(src, follow):
        os.setxattr(dst, name, value, follow_symlinks=follow)


@attrs.define
class _Frame:
    """One directory on the way down: its name in its parent, its stat, and the entries still to copy."""

    name: str
    st: os.stat_result
    entries: list[tuple[str, os.stat_result]]
    index: int = 0


def _list(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    with os.scandir(dir_fd) as it:
        return [(e.name, e.stat(follow_symlinks=False)) for e in it]


def _finish_dir(src_fd: int, dst_fd: int, st: os.stat_result) -> None:
    # chown first: it clears setuid/setgid, which chmod then sets.  Times
    # last: creating the entries inside changed them.
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src_fd, dst_fd, follow=True)
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


class TreeCopier:
    """Copies one tree into a new directory; make one per copy (it holds the hardlink map and the method)."""

    def __init__(self, method: str = "reflink") -> None:
        if method not in COPY_METHODS:
            raise ValueError(f"unknown copy method {method!r}; known: {', '.join(COPY_METHODS)}")
        self.method = method
        """The data copy method in use now (it moves down `COPY_METHODS` when refused)."""
        self._links: dict[tuple[int, int], tuple[str, ...]] = {}
        self._buffer: bytearray | None = None

    def copy_tree(self, src: str, dst: str) -> None:
        """Copy the directory `src` into the existing empty directory `dst`, the root's attributes too."""
        src_fd = os.open(src, _DIR_FLAGS)
        try:
            root_fd = os.open(dst, _DIR_FLAGS)
        except BaseException:
            os.close(src_fd)
            raise
        dst_fd = os.dup(root_fd)
        try:
            root_st = os.fstat(src_fd)
            frames = [_Frame("", root_st, _list(src_fd))]
            while frames:
                frame = frames[-1]
                if frame.index == len(frame.entries):
                    _finish_dir(src_fd, dst_fd, frame.st)
                    frames.pop()
                    if frames:
                        src_fd = _replace(src_fd, os.open("..", _DIR_FLAGS, dir_fd=src_fd))
                        dst_fd = _replace(dst_fd, os.open("..", _DIR_FLAGS, dir_fd=dst_fd))
                    continue
                name, st = frame.entries[frame.index]
                frame.index += 1
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(name, 0o700, dir_fd=dst_fd)
                    # Only the current directory's descriptors stay open
                    # (".." brings us back), so depth costs no descriptors.
                    src_fd = _replace(src_fd, os.open(name, _DIR_FLAGS, dir_fd=src_fd))
                    dst_fd = _replace(dst_fd, os.open(name, _DIR_FLAGS, dir_fd=dst_fd))
                    frames.append(_Frame(name, st, _list(src_fd)))
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = self._links.get(key)
                    if first is not None:
                        _link(root_fd, first, dst_fd, name)
                        continue
                    self._links[key] = (*(f.name for f in frames[1:]), name)
                self._copy_entry(src_fd, dst_fd, name, st)
        finally:
            os.close(src_fd)
            os.close(dst_fd)
            os.close(root_fd)

    def _copy_entry(self, src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self._copy_file(src_dir, dst_dir, name, st)
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        else:
            # Character and block devices, fifos, sockets: never opened, only re-created.
            os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_dir)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst_dir)
        _copy_xattrs(_at(src_dir, name), _at(dst_dir, name), follow=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)

    def _copy_file(self, src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
        src_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            dst_fd = os.open(name, flags, 0o600, dir_fd=dst_dir)
            try:
                self._copy_data(src_fd, dst_fd, st.st_size)
                os.fchown(dst_fd, st.st_uid, st.st_gid)
                os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
                _copy_xattrs(src_fd, dst_fd, follow=True)
                os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)

    def _copy_data(self, src_fd: int, dst_fd: int, size: int) -> None:
        while True:
            try:
                if self.method == "reflink":
                    fcntl.ioctl(dst_fd, FICLONE, src_fd)
                elif self.method == "copy_file_range":
                    _copy_range(src_fd, dst_fd, size)
                elif self.method == "sendfile":
                    _sendfile(src_fd, dst_fd, size)
                else:
                    self._read_write(src_fd, dst_fd)
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED or self.method == "read":
                    raise
            # Demote for this file and every later one; restart from offset 0.
            self.method = COPY_METHODS[COPY_METHODS.index(self.method) + 1]
            os.lseek(src_fd, 0, os.SEEK_SET)
            os.lseek(dst_fd, 0, os.SEEK_SET)
            os.ftruncate(dst_fd, 0)

    def _read_write(self, src_fd: int, dst_fd: int) -> None:
        if self._buffer is None:
            self._buffer = bytearray(_CHUNK)
        view = memoryview(self._buffer)
        while True:
            n = os.readv(src_fd, [view])
            if not n:
                return
            written = 0
            while written < n:
                written += os.write(dst_fd, view[written:n])


def _replace(old_fd: int, new_fd: int) -> int:
    os.close(old_fd)
    return new_fd


def _link(root_fd: int, first: tuple[str, ...], dst_dir: int, name: str) -> None:
    """Hardlink `name` in `dst_dir` to the copy already made at `first` (components below the root)."""
    dir_fd = os.dup(root_fd)
    try:
        for component in first[:-1]:
            dir_fd = _replace(dir_fd, os.open(component, _DIR_FLAGS, dir_fd=dir_fd))
        os.link(first[-1], name, src_dir_fd=dir_fd, dst_dir_fd=dst_dir, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def _copy_range(src_fd: int, dst_fd: int, size: int) -> None:
    # Loop until EOF rather than trusting `size`: the file may have grown since lstat.
    remaining = max(size, _CHUNK)
    while True:
        n = os.copy_file_range(src_fd, dst_fd, remaining)
        if n == 0:
            return


def _sendfile(src_fd: int, dst_fd: int, size: int) -> None:
    count = max(size, _CHUNK)
    while True:
        n = os.sendfile(dst_fd, src_fd, None, count)
        if n == 0:
            return
