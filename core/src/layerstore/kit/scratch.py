"""Staging with atomic publish, and a trash that survives crashes.

A driver that builds a layer in place is caught by a crash half-way: after a
``SIGKILL`` the layer "exists" with part of its files.  The cure is to build
it under a private name and rename it into place when it is complete, and,
the other way round, to rename a layer out of sight before deleting it.  A
`ScratchArea` is a directory for both, on the same filesystem as the layers
(so that the renames are atomic)::

    staging = ScratchArea(home / "staging")
    with staging.reserve(layer_id) as entry:     # a fresh, locked directory
        copy_tree(parent_dir, entry.path)
        entry.publish(home / "layers" / layer_id)  # one rename: all or nothing

    trash = ScratchArea(home / "trash")
    trash.discard(home / "layers" / layer_id, layer_id)  # rename away, then delete

    with staging.reserve("copy") as entry:     # replace a live directory in one step
        copy_tree(live_dir, entry.path)
        entry.exchange(live_dir)                 # live_dir is the copy; entry.path the old one
        entry.publish(home / "old")              # keep the old one (else it is deleted on exit)

Every entry ``<label>.<token>`` has a lock file ``<label>.<token>.lock``
that its owner creates and locks (``flock``) *before* the entry exists, and
holds until the entry is published or deleted.  `sweep` deletes the
entries whose lock nobody holds (left by a killed process) and takes the
same lock first, so it never deletes the work of a live process.  Drivers
call `sweep` from their ``gc`` hook, and `unheld` from their ``orphans``
hook (it only looks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from ..fstree import remove_tree

__all__ = ["ScratchArea", "ScratchEntry"]

_LOCK = ".lock"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@attrs.define
class ScratchEntry:
    """One reserved entry of a `ScratchArea`: a path nobody else touches while it is held."""

    path: Path
    """Where to build (a fresh empty directory, or the name `ScratchArea.discard` renamed into)."""
    published: bool = False
    """True once `publish` moved the entry into place."""

    def publish(self, destination: str | os.PathLike[str]) -> None:
        """Rename the entry to `destination` (atomic on one filesystem); it must not exist yet.

        Raises `FileExistsError` (or `OSError` ``ENOTEMPTY``) when
        `destination` exists; the entry is then kept and deleted on exit.
        """
        os.rename(self.path, destination)
        self.published = True

    def exchange(self, destination: str | os.PathLike[str]) -> None:
        """Swap the entry with the existing `destination` in one step (``renameat2`` ``RENAME_EXCHANGE``).

        Readers of `destination` see the old or the new tree, never none.
        Afterwards the entry's path holds what `destination` held: it is
        deleted on exit (or swept after a crash) unless `publish` moves it
        somewhere.  Raises `OSError` (``ENOENT`` when `destination` does not
        exist, ``EINVAL`` where the filesystem cannot exchange).
        """
        import ctypes  # only an exchange needs it (and ctypes costs every command ~3 ms)

        old, new = os.fsencode(self.path), os.fsencode(destination)
        if ctypes.CDLL(None, use_errno=True).renameat2(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_EXCHANGE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(destination))


@attrs.define
class ScratchArea:
    """A directory of locked scratch entries (staging or trash); created on first use."""

    directory: Path = attrs.field(converter=Path)
    """Where the entries live (same filesystem as the layers)."""
    delete: Callable[[Path], object] = remove_tree
    """How an entry is deleted: a directory tree by default; a driver whose layers are
    backend objects (a btrfs subvolume) passes its own deletion."""

    @contextlib.contextmanager
    def reserve(self, label: str, *, make_dir: bool = True) -> Iterator[ScratchEntry]:
        """Reserve a fresh entry named after `label` (e.g. the layer ID) and hold it.

        With `make_dir` the entry is an empty directory (mode 0700) when the
        block starts; otherwise only its name is reserved (for a rename, a
        snapshot or a file).  On exit an entry that was not published is
        deleted; if the process dies instead, `sweep` deletes it later.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd, path = self._lock_new(label)
        with self._held(lock_fd, path, make_dir=make_dir) as entry:
            yield entry

    @contextlib.contextmanager
    def _held(self, lock_fd: int, path: Path, *, make_dir: bool) -> Iterator[ScratchEntry]:
        """The body of a reservation whose lock `lock_fd` is held: delete what is left, then the lock."""
        entry = ScratchEntry(path)
        try:
            if make_dir:
                os.mkdir(path, 0o700)
            yield entry
        finally:
            try:
                if not entry.published and os.path.lexists(path):
                    self.delete(path)
                # Only once the entry is gone: a lock file left unlocked makes
                # the next sweep finish the deletion.
                os.unlink(f"{path}{_LOCK}")
            finally:
                os.close(lock_fd)

    def discard(self, path: str | os.PathLike[str], label: str) -> None:
        """Make `path` disappear at once (one rename into the area), then delete it.

        If the process dies while deleting, what is left is swept later.  On a
        full filesystem, where not even a lock file fits, the entry is renamed
        in without one (a sweep treats it as garbage, which it is), so that
        removing still frees space.  Raises `FileNotFoundError` if `path`
        does not exist.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock_fd, reserved = self._lock_new(label)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            unlocked = self.directory / f"{label}.{os.urandom(6).hex()}"
            os.rename(path, unlocked)
            self.delete(unlocked)
            return
        with self._held(lock_fd, reserved, make_dir=False) as entry:
            os.rename(path, entry.path)

    def sweep(self) -> list[str]:
        """Delete the entries nobody holds (leftovers of killed processes); return their names."""
        return self._unheld(remove=True)

    def unheld(self) -> list[str]:
        """The names of the entries nobody holds (what `sweep` would delete now), without deleting anything."""
        return self._unheld(remove=False)

    def _unheld(self, *, remove: bool) -> list[str]:
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        found = []
        for name in sorted(names):
            if name.endswith(_LOCK):
                entry = name[: -len(_LOCK)]
                if self._unheld_entry(entry, remove=remove):
                    found.append(entry)
            elif f"{name}{_LOCK}" not in names:
                # An entry always has its lock file while its owner lives
                # (the lock is made first and removed last): this is garbage.
                if remove:
                    self.delete(self.directory / name)
                found.append(name)
        return found

    def entries(self) -> list[str]:
        """The names of the entries present now (held or left over)."""
        try:
            return sorted(n for n in os.listdir(self.directory) if not n.endswith(_LOCK))
        except FileNotFoundError:
            return []

    def _lock_new(self, label: str) -> tuple[int, Path]:
        while True:
            path = self.directory / f"{label}.{os.urandom(6).hex()}"
            fd = os.open(f"{path}{_LOCK}", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweep may have deleted the lock file between creation and
            # flock (it was unlocked then); holding an unlinked lock protects
            # nothing, so start again with a new name.
            if os.fstat(fd).st_nlink > 0:
                return fd, path
            os.close(fd)

    def _unheld_entry(self, entry: str, *, remove: bool) -> bool:
        """True when nobody holds `entry`'s lock; with `remove`, delete the entry and then its lock file."""
        lock = self.directory / f"{entry}{_LOCK}"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # its owner finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live process holds it
            if os.fstat(fd).st_nlink == 0:
                return False  # its owner finished between our listing and open
            if remove:
                if os.path.lexists(self.directory / entry):
                    self.delete(self.directory / entry)
                os.unlink(lock)
            return True
        finally:
            os.close(fd)
