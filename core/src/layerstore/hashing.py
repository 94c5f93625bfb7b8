"""A sha256 computed on a helper thread while the caller goes on with the next chunk.

``hashlib`` releases the GIL while it hashes a large buffer, so a helper
thread hashes one chunk of a layer while this thread extracts or reassembles
the next: at ~0.6 s per GiB without SHA instructions, hashing would otherwise
be most of an export's time.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from _typeshed import ReadableBuffer

__all__ = ["BackgroundSha256"]

#: Chunks smaller than this are hashed at once, on the calling thread (a hand-over costs more).
SMALL: Final = 1 << 16


class BackgroundSha256:
    """sha256 of the chunks given to `update`, in order, hashed at most ``depth`` chunks behind.

    A chunk passed to `update` must not change until it has been hashed: that
    is guaranteed once ``depth`` more chunks have been passed, or after
    `wait`.  Immutable ``bytes`` may simply be handed over.  The helper thread
    starts with the first large chunk; `close` stops it (use it as a context
    manager or call `close`).
    """

    def __init__(self, depth: int = 4) -> None:
        self._hash = hashlib.sha256()
        self._depth = depth
        self._pending: deque[Future[None]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def update(self, data: ReadableBuffer) -> None:
        """Add `data` to the hash (on the helper thread when it is large)."""
        if memoryview(data).nbytes < SMALL:
            self.wait()
            self._hash.update(data)
            return
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: a small layer never starts the helper

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="layerstore-sha256")
        self._pending.append(self._pool.submit(self._hash.update, data))

    def wait(self) -> None:
        """Return when every chunk given so far has been hashed."""
        while self._pending:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        """The hex sha256 of everything given so far (waits for the helper)."""
        self.wait()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Stop the helper thread (after the chunks it was given)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()

    def __enter__(self) -> BackgroundSha256:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
