"""Parallel blob downloads that run ahead of the reader into a bounded spool.

`Spool.start(descriptors)` downloads the blobs on `jobs` threads into files
of a private directory; `Spool.open(descriptor)` returns a reader of one of
them that follows its download as it grows, so the first blob streams
straight through while the next ones arrive.  At most `jobs` blobs are
downloaded-or-downloading and not yet closed by the reader: a slow reader
holds the downloads back instead of filling the disk.  Each spool file is
deleted when its reader is closed, all of them on `close`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ..images.descriptor import Descriptor

__all__ = ["Spool"]

_BLOCK = 1024 * 1024


class _Entry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()


class _FollowingReader(io.RawIOBase):
    """Reads a spool file while its download is still writing it."""

    def __init__(self, entry: _Entry, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._entry = entry
        self._file = open(entry.path, "rb")  # noqa: SIM115 -- closed in close()
        self._pos = 0
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        entry = self._entry
        with entry.cond:
            while entry.written <= self._pos and not entry.done and entry.error is None:
                entry.cond.wait()
            if entry.error is not None:
                raise entry.error
            available = entry.written - self._pos
        if available <= 0:
            return 0
        view = memoryview(buffer).cast("B")[: min(len(buffer), available)]
        count = self._file.readinto(view)
        self._pos += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._on_close()
        super().close()


class Spool:
    """Downloads blobs ahead of their reader; `opener(descriptor)` opens one verified download stream."""

    def __init__(self, opener: Callable[[Descriptor], IO[bytes]], *, jobs: int = 3,
                 directory: str | os.PathLike[str] | None = None) -> None:
        self._opener = opener
        self._jobs = max(1, jobs)
        self._dir = Path(tempfile.mkdtemp(prefix="layerstore-pull-", dir=directory))
        self._entries: dict[str, _Entry] = {}
        self._slots = threading.Semaphore(self._jobs)
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self._jobs, thread_name_prefix="layerstore-pull")
        self._scheduler: threading.Thread | None = None

    def start(self, descriptors: Sequence[Descriptor]) -> None:
        """Begin downloading `descriptors`, in this order (duplicates are fetched once)."""
        todo = []
        for descriptor in descriptors:
            if descriptor.digest not in self._entries:
                entry = _Entry(self._dir / descriptor.digest.replace(":", "-"))
                self._entries[descriptor.digest] = entry
                todo.append((descriptor, entry))
        # Slots are taken in order on one thread, so blob n never waits for a slot held by blob n+1.
        self._scheduler = threading.Thread(target=self._schedule, args=(todo,), daemon=True,
                                           name="layerstore-pull-scheduler")
        self._scheduler.start()

    def _schedule(self, todo: list[tuple[Descriptor, _Entry]]) -> None:
        for descriptor, entry in todo:
            while not self._slots.acquire(timeout=0.5):
                if self._cancelled.is_set():
                    return
            if self._cancelled.is_set():
                return
            self._pool.submit(self._download, descriptor, entry)

    def _download(self, descriptor: Descriptor, entry: _Entry) -> None:
        try:
            with open(entry.path, "wb") as out, self._opener(descriptor) as stream:
                while not self._cancelled.is_set():
                    block = stream.read(_BLOCK)
                    if not block:
                        break
                    out.write(block)
                    out.flush()
                    with entry.cond:
                        entry.written += len(block)
                        entry.cond.notify_all()
            with entry.cond:
                entry.done = True
                entry.cond.notify_all()
        except BaseException as exc:
            with entry.cond:
                entry.error = exc
                entry.cond.notify_all()

    def has(self, descriptor: Descriptor) -> bool:
        """True when `descriptor` was handed to `start` and not opened yet."""
        return descriptor.digest in self._entries

    def open(self, descriptor: Descriptor) -> IO[bytes]:
        """A reader of a spooled blob (the caller reads it to EOF and closes it; errors surface on read)."""
        entry = self._entries.pop(descriptor.digest)
        with entry.cond:
            # The file exists once its download started; wait for that.
            while not entry.path.exists() and entry.error is None and not entry.done:
                entry.cond.wait(timeout=0.1)
            if entry.error is not None:
                self._slots.release()
                raise entry.error

        def closed() -> None:
            with contextlib.suppress(OSError):
                entry.path.unlink()
            self._slots.release()

        return io.BufferedReader(_FollowingReader(entry, closed), buffer_size=_BLOCK)

    def close(self) -> None:
        """Stop the downloads and delete every spool file."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._scheduler is not None:
            self._scheduler.join()
        shutil.rmtree(self._dir, ignore_errors=True)
