"""Copy a layer tree exactly: every file type, owner, mode, xattr, time and hardlink.

File data is copied with the cheapest method the filesystem offers: a reflink
(``FICLONE``, btrfs/xfs) shares the blocks, ``copy_file_range`` copies inside
the kernel, ``sendfile`` and a read/write loop are the fallbacks.  The method
is chosen once per tree: the first file that refuses a method demotes it for
the rest of the copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator

from layerstore.xattrs import get_xattr, list_xattrs

__all__ = ["COPY_METHODS", "TreeCopier", "probe_reflink"]

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

COPY_METHODS: tuple[str, ...] = ("reflink", "copy_file_range", "sendfile", "read")
"""Data copy methods from fastest to most portable."""

# errno values meaning "this method does not work for these files", not "the copy failed".
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTTY})
_CHUNK = 1 << 20
_PERMS = 0o7777


def probe_reflink(directory: str) -> bool:
    """Return True if files in `directory` can be cloned with ``FICLONE``."""
    src_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-a")
    dst_path = os.path.join(directory, f".reflink-probe-{os.getpid()}-b")
    try:
        with open(src_path, "wb") as src:
            src.write(b"x")
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


def _xattrs(path: str | int, follow: bool) -> Iterator[tuple[str, bytes]]:
    try:
        names = list_xattrs(path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            yield name, get_xattr(path, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed meanwhile
                raise


class TreeCopier:
    """Copies one tree into a new directory; create one per copy (it holds the hardlink map and the method)."""

    def __init__(self, method: str = "reflink") -> None:
        if method not in COPY_METHODS:
            raise ValueError(f"unknown copy method {method!r}; known: {', '.join(COPY_METHODS)}")
        self.method = method
        self._links: dict[tuple[int, int], str] = {}
        self._buffer: bytearray | None = None

    def copy_tree(self, src: str, dst: str) -> None:
        """Copy the directory `src` into the existing empty directory `dst`, the root's attributes too."""
        st = os.lstat(src)
        self._copy_dir_contents(src, dst)
        self._finish(src, dst, st, is_dir=True)

    def _copy_dir_contents(self, src: str, dst: str) -> None:
        with os.scandir(src) as entries:
            children = list(entries)
        for entry in children:
            s = entry.path
            d = os.path.join(dst, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                self._copy_dir_contents(s, d)
                self._finish(s, d, st, is_dir=True)
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self._links.get(key)
                if first is not None:
                    os.link(first, d, follow_symlinks=False)
                    continue
                self._links[key] = d
            if stat.S_ISREG(mode):
                self._copy_file(s, d, st)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
                os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
                for name, value in _xattrs(s, follow=False):
                    os.setxattr(d, name, value, follow_symlinks=False)
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            else:
                # character and block devices, fifos, sockets: never opened, only re-created.
                os.mknod(d, stat.S_IFMT(mode) | 0o600, st.st_rdev)
                self._finish(s, d, st, is_dir=False)

    def _finish(self, src: str, dst: str, st: os.stat_result, *, is_dir: bool) -> None:
        # chown first: it clears setuid/setgid and security.capability, which come after.
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
        os.chmod(dst, stat.S_IMODE(st.st_mode), follow_symlinks=False)
        for name, value in _xattrs(src, follow=False):
            os.setxattr(dst, name, value, follow_symlinks=False)
        # Directory times last: creating the entries inside changed them.
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _copy_file(self, src: str, dst: str, st: os.stat_result) -> None:
        src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self._copy_data(src_fd, dst_fd, st.st_size)
                os.fchown(dst_fd, st.st_uid, st.st_gid)
                os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
                for name, value in _xattrs(src_fd, follow=True):
                    os.setxattr(dst_fd, name, value)
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
