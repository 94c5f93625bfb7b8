"""A driver-wide lock: one lock file in the driver home, held with ``flock`` for a ``with`` block."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..flock import held_flock

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["held_lock"]


@contextlib.contextmanager
def held_lock(path: str | os.PathLike[str], *, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on the lock file `path` (created mode 0600 if missing) for the ``with`` block.

    Exclusive unless `shared`; waits for other holders.  The lock is released
    when the block ends or the process dies, so a killed holder never leaves
    it taken.  The file stays (it is the lock's name): opening an existing
    one needs no space, so a driver that makes it when its home is made can
    still lock on a full filesystem.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        with held_flock(fd, shared=shared):
            yield
    finally:
        os.close(fd)
