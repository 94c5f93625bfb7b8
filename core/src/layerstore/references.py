"""Mount references that die with their holder, kept in a runroot that a reboot empties.

Each reference is one empty file, named after its owner::

    <runroot>/<store key>/refs/<sha256 of layer ID>/p.<pid>-<start time>.<n>   held by a process
    <runroot>/<store key>/refs/<sha256 of layer ID>/d.<random>                 detached (`layerstore mount`)
    <runroot>/<store key>/locks/<stripe>                                       flock files

A process reference belongs to the process that took it (its pid and start
time, see `layerstore.owner`); when that process is gone -- SIGKILLed in the
middle of an export, say -- the reference is *stale* and is reaped by the
next reader of the count.  A detached reference outlives its process on
purpose (``layerstore mount`` returns while the layer stays mounted) and
is released by ``umount``; ``umount --force`` releases every reference.

The runroot defaults to ``/run/layerstore`` for root and
``$XDG_RUNTIME_DIR/layerstore`` otherwise: a tmpfs, so counts are reset
by a reboot (when every mount is gone too) and taking a reference needs no
space on the store's filesystem, even when it is full.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from .owner import current_owner, owner_alive

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["RUNROOT_ENV", "ReferenceTable", "default_runroot"]

RUNROOT_ENV = "LAYERSTORE_RUNROOT"
_LOCK_STRIPES = 64
_PROCESS = "p."
_DETACHED = "d."
_serial = itertools.count(1)


def default_runroot(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """``$LAYERSTORE_RUNROOT``, else ``/run/layerstore`` for root, ``$XDG_RUNTIME_DIR/layerstore`` otherwise.

    Without ``XDG_RUNTIME_DIR`` a non-root user gets ``<tmp>/layerstore-<uid>``.
    """
    env = os.environ if environ is None else environ
    if env.get(RUNROOT_ENV):
        return Path(env[RUNROOT_ENV])
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return Path("/run/layerstore")
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "layerstore"
    import tempfile  # only here: it imports shutil, random and the compression modules

    return Path(tempfile.gettempdir()) / f"layerstore-{uid}"


class ReferenceTable:
    """The references of every layer of one driver home, with per-layer locks (striped flocks).

    Methods that read or change references must be called with the layer's
    lock held (`locked`).
    """

    def __init__(self, home: Path, runroot: Path | None = None) -> None:
        base = runroot if runroot is not None else default_runroot()
        key = hashlib.sha256(os.fsencode(os.path.realpath(home))).hexdigest()[:32]
        self.directory = base / key
        self._refs = self.directory / "refs"
        self._locks = self.directory / "locks"
        self._local = threading.local()

    def _dir(self, layer_id: str) -> Path:
        # IDs are opaque: hash them so any string is a safe file name.
        return self._refs / hashlib.sha256(layer_id.encode()).hexdigest()

    @contextlib.contextmanager
    def locked(self, layer_id: str) -> Iterator[None]:
        """Hold the lock of `layer_id` (reentrant within a thread, exclusive across threads and processes)."""
        with self.try_locked(layer_id, blocking=True):
            yield

    @contextlib.contextmanager
    def try_locked(self, layer_id: str, *, blocking: bool = False) -> Iterator[bool]:
        """Like `locked`, but yield False at once instead of waiting when another holder has the lock."""
        held: dict[int, list[int]] = self._local.__dict__.setdefault("held", {})
        stripe = zlib.crc32(layer_id.encode()) % _LOCK_STRIPES
        entry = held.get(stripe)
        if entry is not None:
            entry[1] += 1
            try:
                yield True
            finally:
                entry[1] -= 1
            return
        fd = self._lock_stripe(stripe, blocking=blocking)
        if fd is None:
            yield False
            return
        try:
            held[stripe] = [fd, 1]
            try:
                yield True
            finally:
                del held[stripe]
                # Lock files live only while used, so the runroot does not grow with every store ever
                # opened; a waiter on this file re-checks the name once it has the lock.
                with contextlib.suppress(OSError):
                    os.unlink(self._locks / str(stripe))
                for directory in (self._locks, self._refs, self.directory):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
        finally:
            os.close(fd)

    def _lock_stripe(self, stripe: int, *, blocking: bool = True) -> int | None:
        """Open and flock lock file `stripe`; return its descriptor (None: held elsewhere and not `blocking`).

        `prune` may unlink a lock file nobody holds, so after locking check
        that the name still leads to the locked file, else start again.
        """
        path = self._locks / str(stripe)
        while True:
            try:
                self._locks.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except (FileNotFoundError, FileExistsError):  # mkdir racing an rmdir of an emptied directory
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def prune(self) -> None:
        """Delete the lock files nobody holds and the directories left empty (when a store closes).

        Keeps the runroot from growing with every store ever opened; never
        touches a reference.
        """
        with contextlib.suppress(OSError):
            for name in os.listdir(self._locks):
                path = self._locks / name
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(path)  # holding it: a waiter re-checks the name after it gets the lock
                except OSError:  # held (BlockingIOError) or gone
                    pass
                finally:
                    os.close(fd)
        for directory in (self._locks, self._refs, self.directory):
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _names(self, layer_id: str) -> list[str]:
        try:
            return os.listdir(self._dir(layer_id))
        except FileNotFoundError:
            return []

    def reap(self, layer_id: str) -> int:
        """Delete the references of dead processes to `layer_id`; return how many were deleted."""
        directory = self._dir(layer_id)
        reaped = 0
        for name in self._names(layer_id):
            if name.startswith(_PROCESS) and not owner_alive(name[len(_PROCESS) :].rpartition(".")[0]):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / name)
                reaped += 1
        if reaped:
            self._prune(layer_id)
        return reaped

    def count(self, layer_id: str) -> int:
        """The live references to `layer_id` (reap first to drop the stale ones)."""
        return len(self._names(layer_id))

    def add(self, layer_id: str) -> str:
        """Add a reference owned by this process; return its name (give it to `drop`)."""
        directory = self._dir(layer_id)
        name = f"{_PROCESS}{current_owner()}.{next(_serial)}"
        while True:
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            except (FileNotFoundError, FileExistsError):  # mkdir racing an rmdir of an emptied directory
                continue
            return name

    def detach(self, layer_id: str, name: str) -> str:
        """Turn this process's reference `name` into a detached one (kept after exit); return its new name."""
        directory = self._dir(layer_id)
        detached = f"{_DETACHED}{os.urandom(8).hex()}"  # secrets.token_hex, without importing random
        os.rename(directory / name, directory / detached)
        return detached

    def drop(self, layer_id: str, name: str | None = None) -> bool:
        """Drop reference `name`, or (None) one detached reference; False when there was none to drop."""
        if name is None:
            name = next((n for n in sorted(self._names(layer_id)) if n.startswith(_DETACHED)), None)
            if name is None:
                return False
        try:
            os.unlink(self._dir(layer_id) / name)
        except FileNotFoundError:
            return False
        self._prune(layer_id)
        return True

    def drop_all(self, layer_id: str) -> int:
        """Drop every reference to `layer_id`, whoever holds it; return how many there were."""
        names = self._names(layer_id)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._dir(layer_id) / name)
        self._prune(layer_id)
        return len(names)

    def layers_with_references(self) -> list[str]:
        """Hashed names of the layers that have reference directories (for `Driver.release_stale`)."""
        try:
            return sorted(os.listdir(self._refs))
        except FileNotFoundError:
            return []

    def hashed(self, layer_id: str) -> str:
        """The directory name of `layer_id`'s references."""
        return self._dir(layer_id).name

    def _prune(self, layer_id: str) -> None:
        with contextlib.suppress(OSError):  # not empty, or gone
            self._dir(layer_id).rmdir()
