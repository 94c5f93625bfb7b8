"""Record a layer tar while it streams into a driver: its sha256 and its tar-split metadata.

`LayerRecording` is a readable pass-through stream.  The driver's
``apply_diff`` reads the tar from it; every byte it hands out is also hashed
(the layer digest) and disassembled into tar-split metadata (for byte-exact
export).  It does that work in one of two places:

- in a forked worker process, when this process runs a single thread: each
  chunk read is written into a pipe and the worker hashes and disassembles it
  on another CPU.  Parsing every tar header a second time for tar-split is a
  third of an import's Python work; here it overlaps with the extraction
  instead of adding to it.  When the layer is a regular file (``source_file``),
  the worker reads the file itself instead of the pipe, so this process
  copies nothing for it (the pipe was a quarter of a large import here), and
  `finish` checks that the file did not change meanwhile.
- inline, otherwise (forking a multi-threaded process is unsafe): the
  metadata is recorded as the bytes pass and the sha256 is computed on a
  helper thread (``hashlib`` releases the GIL while hashing).

Both produce the same metadata and digest, and report a malformed archive as
`InvalidArchive` and a failed metadata write as the `OSError` itself.  The
worker is a child of this process only: it exits when its input pipe closes
(also when this process dies), and `close` kills and reaps it by its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import io
import json
import os
import select
import signal
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from .. import errors
from ..errors import InvalidArchive, LayerStoreError
from ..fdwrite import flushed_descriptor
from ..hashing import SMALL, BackgroundSha256
from ..process import die_with_parent
from .recorder import TarSplitRecorder

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["LayerRecording", "can_record_in_worker"]

_CHUNK: Final = 1 << 20
_HASH_DEPTH: Final = 4  # inline: that many chunks may wait to be hashed
_PIPE_SIZE: Final = 1 << 20


def can_record_in_worker() -> bool:
    """Whether `LayerRecording` may fork its worker: the platform forks and only one thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1


class _HashingReader(io.RawIOBase):
    """Pass `source` through while hashing it (sha256), large chunks on a helper thread.

    Each large chunk is read into a ring buffer of its own, so the consumer may
    reuse the buffer it passed in while the helper still hashes the copy.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._readinto = getattr(source, "readinto", None)
        self._hash = BackgroundSha256(_HASH_DEPTH)
        self._ring: list[memoryview] = []  # allocated as needed: a small layer uses one
        self._turn = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), _CHUNK)
        if want < SMALL:
            data = self._source.read(want)
            view[: len(data)] = data
            self._hash.update(data)
            return len(data)
        # This slot was last handed to the hash _HASH_DEPTH + 1 chunks ago: it is free again.
        turn = self._turn
        self._turn = (turn + 1) % (_HASH_DEPTH + 1)
        if turn == len(self._ring):
            self._ring.append(memoryview(bytearray(_CHUNK)))
        own = self._ring[turn][:want]
        if self._readinto is not None:
            n = int(self._readinto(own) or 0)
        else:
            data = self._source.read(want)
            n = len(data)
            own[:n] = data
        if n:
            view[:n] = own[:n]
            self._hash.update(own[:n])
        return n

    def hexdigest(self) -> str:
        """The sha256 of everything read so far (waits for the helper)."""
        return self._hash.hexdigest()

    def close(self) -> None:
        self._hash.close()
        super().close()


class _HashingPipe(io.RawIOBase):
    """The worker's input, hashed (sha256) as it is read: the read end of the pipe, or a file from `offset` on."""

    def __init__(self, fd: int, offset: int | None = None) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._offset is None:
            n = os.readv(self._fd, [buffer])
        else:  # positioned reads: the parent reads the same open file at its own position
            n = os.preadv(self._fd, [buffer], self._offset)
            self._offset += n
        if n:
            self._hash.update(memoryview(buffer)[:n])
        return n

    def hexdigest(self) -> str:
        """The sha256 of everything read so far."""
        return self._hash.hexdigest()


def _worker(data_fd: int, metadata_fd: int, result_fd: int, offset: int | None) -> int:
    """Body of the forked worker: record the tar and write a one-line JSON report to `result_fd`.

    The tar comes from the pipe `data_fd`, or with an `offset` from the file
    `data_fd`, from there to its end.
    """
    report: dict[str, Any]
    code = 0
    try:
        # The hash is computed here, not on a helper thread: measured, that is
        # faster (a second thread only adds GIL hand-overs to this process).
        source = _HashingPipe(data_fd, offset)
        with os.fdopen(os.dup(metadata_fd), "wb") as metadata:
            TarSplitRecorder(cast(BinaryIO, source), metadata).finish()
            report = {"digest": source.hexdigest()}
    except OSError as exc:
        code = 1
        report = {"errno": exc.errno, "message": exc.strerror or str(exc)}
    except BaseException as exc:  # every failure goes back to the parent
        code = 1
        report = {"error": type(exc).__name__, "message": str(exc)}
    view = memoryview(json.dumps(report).encode() + b"\n")
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        while view:
            view = view[os.write(result_fd, view) :]
    return code


def _reported_error(report: dict[str, Any]) -> BaseException:
    """The exception a worker reported, as the same type where it is one of ours or an `OSError`."""
    message = str(report.get("message", ""))
    if report.get("errno") is not None:
        return OSError(int(report["errno"]), message)
    kind = getattr(errors, str(report.get("error")), None)
    if isinstance(kind, type) and issubclass(kind, LayerStoreError) and kind is not errors.CommandFailed:
        return kind(message)
    return LayerStoreError(f"recording the layer failed: {report.get('error')}: {message}")


class LayerRecording(io.RawIOBase):
    """A readable stream of the plain tar `source` that records its sha256 and tar-split metadata.

    The tar-split metadata (gzip-compressed JSON lines) goes to ``metadata``,
    a binary file opened for writing; in worker mode it is written through
    its file descriptor, so the caller must not write to it meanwhile.  Read
    as much as the consumer wants, then call `finish` (reads the rest, completes
    the metadata, returns ``"sha256:<hex>"``), and always `close`.  Errors:
    `InvalidArchive` for a malformed archive (from a read, or from `finish`
    in worker mode, where the worker notices it a little later), the
    `OSError` of a failed metadata write, and errors of `source` unchanged.
    ``parallel`` asks for worker mode (True) or inline mode (False); None picks
    worker mode when `can_record_in_worker`.  Worker mode needs ``metadata``
    to have a file descriptor.
    When the worker cannot be forked (``EAGAIN``, ``ENOMEM``), it records
    inline; `in_worker` tells which mode runs.

    ``source_file`` ``(fd, offset)`` promises that `source` yields exactly the
    bytes of the regular file open as ``fd`` from ``offset`` to its end (see
    `layerstore.archive.compression.plain_file_span`).  The worker then reads
    the file itself (`reads_file`), the consumer's reads pass straight
    through, and `finish` raises `InvalidArchive` when the file's size, times
    or identity changed while it was read (what was extracted and what was
    recorded could differ).
    """

    def __init__(
        self,
        source: BinaryIO,
        metadata: BinaryIO,
        *,
        parallel: bool | None = None,
        source_file: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._source_readinto = getattr(source, "readinto", None)
        self._done: str | None = None
        self._pid = 0
        self._data_w = -1
        self._result_r = -1
        self._hashing: _HashingReader | None = None
        self._recorder: TarSplitRecorder | None = None
        self._failure: BaseException | None = None
        self._file: tuple[int, os.stat_result] | None = None  # the source file the worker reads, as it was
        self._worker_digest: str | None = None
        self._watch: select.poll | None = None
        metadata_fd = flushed_descriptor(metadata)
        if parallel is None:
            parallel = can_record_in_worker()
        if source_file is not None:
            self._file = (source_file[0], os.fstat(source_file[0]))
        if not (parallel and metadata_fd is not None and self._start_worker(metadata_fd, source_file)):
            self._file = None
            self._hashing = _HashingReader(source)
            self._recorder = TarSplitRecorder(io.BufferedReader(self._hashing, _CHUNK), metadata)

    @property
    def in_worker(self) -> bool:
        """True when a worker process records (worker mode), False when this process does."""
        return self._recorder is None

    @property
    def reads_file(self) -> bool:
        """True when the worker reads the source file itself (``source_file`` given, worker mode)."""
        return self._file is not None

    def _start_worker(self, metadata_fd: int, source_file: tuple[int, int] | None) -> bool:
        """Fork the worker; False when the system cannot (e.g. no memory for a new process): record inline."""
        if source_file is not None:
            data_r, data_w = source_file[0], -1
        else:
            data_r, data_w = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # fewer, larger writes; the default 64 KiB works too
                fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (data_w, result_r, result_w) if source_file else (data_r, data_w, result_r, result_w):
                if fd >= 0:
                    os.close(fd)
            return False
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                # Unreachable objects of the parent must not be finalised here
                # (a temporary file's finaliser would delete the parent's file).
                gc.disable()
                die_with_parent(parent)
                with contextlib.suppress(ValueError):  # only possible in the main thread
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Keep nothing of the parent's open: its lock files above all
                # (a lock must go away with the process that took it).
                _close_all_but(data_r, result_w, metadata_fd)
                code = _worker(data_r, metadata_fd, result_w, source_file[1] if source_file else None)
            finally:
                os._exit(code)
        if source_file is None:
            os.close(data_r)
        else:
            self._watch = select.poll()
            self._watch.register(result_r, select.POLLIN)
        os.close(result_w)
        self._pid, self._data_w, self._result_r = pid, data_w, result_r
        return True

    def readable(self) -> bool:
        """Return True: this stream is readable."""
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Read the next bytes of the source into ``buffer`` (and record them); 0 at the end."""
        if self._recorder is not None:
            return self._recorder.readinto(buffer)
        if self._done is not None:
            return 0
        if self._file is not None:
            return self._read_beside_worker(buffer)
        if self._data_w < 0:  # the worker already stopped: raise why
            self._finish_worker()
        view = memoryview(buffer).cast("B")
        n = self._read_source(view)
        rest = view[:n]
        try:
            while rest:
                rest = rest[os.write(self._data_w, rest) :]
        except BrokenPipeError:
            # The worker stopped early: it found the archive malformed (or failed); say why.
            self._finish_worker()
            raise LayerStoreError("the tar-split recording process stopped before the end of the layer") from None
        return n

    def _read_beside_worker(self, buffer: WriteableBuffer) -> int:
        """A read of the source while the worker reads the same file; a worker that stopped on an error says so now."""
        if self._pid and cast(select.poll, self._watch).poll(0):
            self._finish_worker()  # it finished first (or raises why it stopped)
        return self._read_source(memoryview(buffer).cast("B"))

    def _read_source(self, view: memoryview) -> int:
        if self._source_readinto is not None:
            return int(self._source_readinto(view) or 0)
        data = self._source.read(len(view))
        view[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Read the rest of the source, complete the metadata and return the digest ``"sha256:<hex>"``."""
        if self._done is not None:
            return self._done
        buffer = bytearray(_CHUNK)
        if self._recorder is not None:
            while self._recorder.readinto(buffer):
                pass
            hashing = cast(BackgroundSha256, self._hashing)  # set together with the recorder
            self._done = "sha256:" + hashing.hexdigest()
            return self._done
        if self._file is not None:
            # The worker reads the rest of the file itself: nothing to pass on.
            digest = self._finish_worker()
            fd, before = self._file
            if _identity(os.fstat(fd)) != _identity(before):
                self._failure = InvalidArchive(
                    "the layer file changed while it was imported (its size or times differ); "
                    "import it again when nothing writes to it"
                )
                raise self._failure
            self._done = "sha256:" + digest
            return self._done
        while self.readinto(buffer):
            pass
        self._done = "sha256:" + self._finish_worker()
        return self._done

    def _finish_worker(self) -> str:
        """Close the pipe, wait for the worker and return its digest or raise its error (the same, if called again)."""
        if self._failure is not None:
            raise self._failure
        if self._worker_digest is not None:
            return self._worker_digest
        if self._data_w >= 0:
            os.close(self._data_w)
        self._data_w = -1
        chunks = []
        while chunk := os.read(self._result_r, 1 << 16):
            chunks.append(chunk)
        pid, self._pid = self._pid, 0
        _, status = os.waitpid(pid, 0)
        report = json.loads(b"".join(chunks)) if chunks else {}
        if "digest" in report:
            self._worker_digest = str(report["digest"])
            return self._worker_digest
        self._failure = (
            _reported_error(report)
            if report
            else LayerStoreError(f"the tar-split recording process died ({_describe(status)}); import the layer again")
        )
        raise self._failure

    def close(self) -> None:
        """Release everything; a worker still running (abandoned import) is killed and reaped."""
        if self.closed:
            return
        try:
            if self._pid:
                pid, self._pid = self._pid, 0
                os.kill(pid, signal.SIGKILL)  # our unreaped child: the pid cannot have been reused
                os.waitpid(pid, 0)
            for fd in (self._data_w, self._result_r):
                if fd >= 0:
                    os.close(fd)
            self._data_w = self._result_r = -1
            if self._recorder is not None:
                self._recorder.close()
            if self._hashing is not None:
                self._hashing.close()
        finally:
            super().close()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written, truncated or replaced."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _close_all_but(*keep: int) -> None:
    low = 0
    for fd in sorted(keep):
        if low < fd:  # closerange(0, 0) closes every descriptor (CPython passes 0..-1 to close_range)
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
