"""Atomic file writes: readers see the old contents or the new, never a mix or an empty file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "is_atomic_temporary", "sweep_atomic_temporaries"]

_TMP = ".tmp-"


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace the file `path` with `data` in one step.

    The data goes to a temporary file in the same directory
    (``.<name>.tmp-<pid>-<random>``), is flushed to disk when `durable` (the
    default), and is renamed over `path`; with `durable` the directory is
    synced too, so the new name survives a power cut.  A crash leaves the old
    file and at worst a temporary file that `sweep_atomic_temporaries`
    deletes (a driver's ``gc`` hook calls it).
    """
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}{_TMP}{os.getpid()}-{os.urandom(4).hex()}")
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
        fsync_dir(target.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names in directory `path` durable (``fsync`` of the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_atomic_temporary(name: str) -> bool:
    """True for the name of a temporary file of `atomic_write`."""
    return name.startswith(".") and _TMP in name


def sweep_atomic_temporaries(directory: str | os.PathLike[str]) -> list[str]:
    """Delete the temporary files in `directory` that `atomic_write` calls of dead processes left; return their names.

    A temporary file names the process that writes it; one whose process
    is gone is garbage, one of a live process is left alone.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if not is_atomic_temporary(name):
            continue
        pid_text = name.rpartition(_TMP)[2].partition("-")[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        # A directory is never an atomic_write temporary, whatever its name.
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return sorted(removed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
