"""Small regular files of a new layer created on helper threads while the extraction reads on.

Creating a file is kernel work, and a filesystem creates files in different
directories at the same time (measured on a loop-mounted ext4: 50,000 files
of 1 KiB in 100 directories took 1.6 s from one thread and 0.9 s from two).
So the extraction loop (`layerstore.archive.apply`) reads the content of a
small file into memory and hands the file to a `FilePool`, whose threads
create it as `EntryWriters.regular` would: a new name (``O_EXCL``, never
following a link), the content and the times.  Only files to which ``open``
already gives their final owner and mode are handed over.

That only pays when the threads do not need the GIL for every system call
(the extracting thread holds it most of the time): the pool is used only
with the optional native module `layerstore_accel`, which creates a whole
batch of files with the GIL released (`accelerated`).  Without it a pool
still works (the threads create the files from Python): the tests use that
to check the pool's rules where the module is not installed.

The archive's order is kept wherever it can show: the loop only hands over
a file whose path nothing of the archive has used yet, and calls `settle`
(wait until every file handed over exists) before any entry that could see
or change one still in the pool: links, device nodes, whiteouts, a file or
directory at a path in the pool or replacing something.  Name resolution
settles by itself when it meets a pending path
(`layerstore.archive._safepath.SafeTree`).  A failure on a thread is raised
from the next `add` or `settle` as `FileWriteFailed`, which names the entry.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Final, NamedTuple

from . import _accel

__all__ = ["SMALL_FILE", "FilePool", "FileWriteFailed", "PendingFile", "accelerated"]

#: Regular files up to this size (read into memory) are handed to the pool.
SMALL_FILE: Final = 64 * 1024
#: Helper threads of a pool (the machines measured had 2 cores; more only queue in the kernel).
THREADS: Final = 2
_BATCH: Final = 32  # files per hand-over: one queue operation and one native call per batch
_MAX_QUEUED: Final = 8 << 20  # content waiting in the queues, at most (plus one batch per thread)
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_native = _accel.create_files


def accelerated() -> bool:
    """Whether the native batch creator (distribution ``layerstore-accel``) is installed."""
    return _native is not None


class PendingFile(NamedTuple):
    """A file to create: where, for which entry, its content, its mode for ``open`` and its (atime, mtime) in ns."""

    path: str
    name: str
    data: bytes
    mode: int
    times: tuple[int, int]


class FileWriteFailed(Exception):
    """Creating the file of tar entry `name` failed with `error` (an `OSError` as a rule)."""

    def __init__(self, error: BaseException, name: str) -> None:
        super().__init__(f"tar entry {name!r}: {error}")
        self.error = error
        self.name = name


def _create(job: PendingFile) -> None:
    """Create one file from Python (what the native module does, with the GIL taken back per call)."""
    fd = os.open(job.path, _FILE_FLAGS, job.mode)
    try:
        view = memoryview(job.data)
        while view:
            view = view[os.write(fd, view) :]
        os.utime(fd, ns=job.times)
    finally:
        os.close(fd)


def _create_batch(batch: list[PendingFile]) -> None:
    """Create the files of `batch` in order; raise `FileWriteFailed` for the first that fails."""
    if _native is not None:
        failed = _native(tuple((os.fsencode(j.path), j.data, j.mode, *j.times) for j in batch))
        if failed is not None:
            index, error = failed
            job = batch[index]
            raise FileWriteFailed(OSError(error, os.strerror(error), job.path), job.name)
        return
    for job in batch:
        try:
            _create(job)
        except OSError as exc:
            raise FileWriteFailed(exc, job.name) from exc


class FilePool:
    """Threads that create the files given to `add`; `pending` holds their layer paths until `settle`.

    The files of one directory go to the same thread, in archive order: two
    threads creating in one directory would only wait for each other in the
    kernel.  Use as a context manager (or call `close`): leaving stops the
    threads after what they were given, without raising what failed.
    """

    def __init__(self, threads: int = THREADS) -> None:
        #: Layer-relative paths of the files handed over since the last `settle`.
        self.pending: set[str] = set()
        self._batches: list[list[PendingFile]] = [[] for _ in range(threads)]
        # Each queued batch travels with the size of its contents (counted once, for the memory bound).
        self._queues: list[queue.SimpleQueue[tuple[list[PendingFile], int] | None]] = [
            queue.SimpleQueue() for _ in range(threads)
        ]
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._unfinished = 0  # batches queued and not yet written
        self._queued_bytes = 0  # content held by queued batches
        self._failure: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, args=(jobs,), name=f"layerstore-files-{n}", daemon=True)
            for n, jobs in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, jobs: queue.SimpleQueue[tuple[list[PendingFile], int] | None]) -> None:
        while (item := jobs.get()) is not None:
            batch, size = item
            try:
                if self._failure is None:  # after a failure the extraction fails: nothing more is written
                    _create_batch(batch)
            except BaseException as exc:  # reported to the extracting thread
                with self._lock:
                    if self._failure is None:
                        self._failure = exc if isinstance(exc, FileWriteFailed) else FileWriteFailed(exc, batch[0].name)
            with self._lock:
                self._unfinished -= 1
                self._queued_bytes -= size
                self._changed.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def add(self, rel: str, job: PendingFile) -> None:
        """Hand over the file at layer path `rel`; raise `FileWriteFailed` if an earlier one failed."""
        self._raise_failure()
        self.pending.add(rel)
        which = hash(rel.rpartition("/")[0]) % len(self._batches)
        batch = self._batches[which]
        batch.append(job)
        if len(batch) >= _BATCH:
            self._hand_over(which)

    def add_all(self, files: list[PendingFile]) -> None:
        """`add` each file of `files`, in order, whose entry name is its layer path (a clean name)."""
        add = self.add
        for job in files:
            add(job.name, job)

    def _hand_over(self, which: int) -> None:
        batch = self._batches[which]
        self._batches[which] = []
        size = sum(len(job.data) for job in batch)
        with self._lock:
            while self._queued_bytes > _MAX_QUEUED and self._failure is None:
                self._changed.wait()  # bounded memory: wait for the threads to catch up
            self._unfinished += 1
            self._queued_bytes += size
        self._queues[which].put((batch, size))

    def _hand_over_all(self) -> None:
        for which, batch in enumerate(self._batches):
            if batch:
                self._hand_over(which)

    def settle(self) -> None:
        """Return when every file handed over exists; raise `FileWriteFailed` for the first that failed."""
        self._hand_over_all()
        with self._lock:
            while self._unfinished:
                self._changed.wait()
        self.pending.clear()
        self._raise_failure()

    def close(self) -> None:
        """Stop the threads once they wrote what they were given (or gave up after a failure)."""
        self._hand_over_all()
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join()
        self.pending.clear()

    def __enter__(self) -> FilePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
