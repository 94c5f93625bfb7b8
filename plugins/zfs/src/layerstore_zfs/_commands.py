"""The ``zfs``/``zpool`` commands this driver runs, and the parsing of their output.

Only the subset that both OpenZFS and zfs-fuse 0.7 accept is used: ``-H``
(no headers, tab separated) everywhere, ``-p`` (exact numbers) only with
``zfs get`` because zfs-fuse's ``zfs list`` has no ``-p``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

from layerstore.errors import CommandFailed
from layerstore.process import run_command

__all__ = [
    "BUSY_ATTEMPTS",
    "get_properties",
    "is_busy",
    "missing",
    "run",
    "run_retrying_busy",
    "stderr_of",
]

BUSY_ATTEMPTS = 12
_FIRST_DELAY = 0.02
_MAX_DELAY = 0.5


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run one zfs/zpool command through `layerstore.process.run_command`."""
    return run_command(argv, check=check)


def stderr_of(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one-line stderr of a finished command."""
    return " ".join(proc.stderr.decode(errors="replace").split())


def missing(proc: subprocess.CompletedProcess[bytes]) -> bool:
    """True when a failed command said that its dataset does not exist (OpenZFS and zfs-fuse wording)."""
    return proc.returncode != 0 and b"does not exist" in proc.stderr


def _busy(proc: subprocess.CompletedProcess[bytes]) -> bool:
    return proc.returncode != 0 and b"busy" in proc.stderr.lower()


def run_retrying_busy(argv: Sequence[str], attempts: int = BUSY_ATTEMPTS) -> subprocess.CompletedProcess[bytes]:
    """Run `argv`, retrying with short growing sleeps while it fails with "busy"; return the last result.

    zfs-fuse lets go of a dataset a few milliseconds after its FUSE mount is
    gone, so a ``destroy`` right after an ``unmount`` can see "dataset is
    busy" once; a dataset that stays busy is really held (the caller says by whom).
    """
    delay = _FIRST_DELAY
    proc = run(argv, check=False)
    for _ in range(attempts - 1):
        if not _busy(proc):
            break
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)
        proc = run(argv, check=False)
    return proc


def is_busy(proc: subprocess.CompletedProcess[bytes]) -> bool:
    """True when a failed command said the dataset or mount is busy."""
    return _busy(proc)


def get_properties(dataset: str, names: Sequence[str]) -> dict[str, str] | None:
    """Read properties of `dataset` in one ``zfs get -H -p``; None when the dataset does not exist."""
    proc = run(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(names), dataset], check=False)
    if missing(proc):
        return None
    if proc.returncode != 0:
        raise CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))
    values = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        prop, _, value = line.partition("\t")
        values[prop] = value
    return values
