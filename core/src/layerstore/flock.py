"""Holding an ``flock`` on an open descriptor, waiting or not."""

from __future__ import annotations

import contextlib
import fcntl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["held_flock"]


@contextlib.contextmanager
def held_flock(fd: int, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on `fd` (exclusive unless `shared`) for the ``with`` body; yield True.

    With `blocking` False, yield False at once instead of waiting when
    another holder has it.  The lock goes with the descriptor: the caller
    closes `fd` (which releases it).
    """
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, op if blocking else op | fcntl.LOCK_NB)
    except BlockingIOError:
        yield False
        return
    yield True
