"""Atomic file writes: readers see the old contents or the new, never a mix or an empty file."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "is_atomic_temporary"]


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace the file `path` with `data` in one step.

    The data goes to a temporary file in the same directory (``.<name>.tmp-<random>``),
    is flushed to disk when `durable` (the default), and is renamed over
    `path`; with `durable` the directory is synced too, so the new name
    survives a power cut.  A crash leaves the old file and at worst a
    temporary file that a driver's ``gc`` may delete (`is_atomic_temporary`).
    """
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def is_atomic_temporary(name: str) -> bool:
    """True for the name of a temporary file `atomic_write` leaves when killed mid-write."""
    return name.startswith(".") and ".tmp-" in name
