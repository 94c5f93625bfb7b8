"""The ``zfs``/``zpool`` commands this driver runs: one at a time per store, each bounded in time.

Only the subset that both OpenZFS and zfs-fuse 0.7 accept is used: ``-H``
(no headers, tab separated) everywhere, ``-p`` (exact numbers) only with
``zfs get`` because zfs-fuse's ``zfs list`` has no ``-p``.

zfs-fuse (Debian's 0.7) hangs for good when two mounts happen at once:
every mount's daemon thread tells the FUSE listener about the new
filesystem by writing a record and then the mount point's name into one
shared pipe, in two writes, so concurrent mounts interleave them; the
listener then reads a garbage name length and waits forever on the pipe
while holding the lock that every FUSE request needs.  From then on no
file on any zfs-fuse mount can be read, and every later ``zfs mount``
waits too.  ``zfs create``, ``clone``, ``mount``, ``rename`` and ``set
mountpoint`` all mount.  So the driver runs its commands one at a time per
store (an ``flock`` on the store's mount directory: it exists from the
start, so locking needs no new file and works on a full pool),
and gives each a time limit, so that a daemon that stops answering anyway
(another program mounting at the same moment) is a one-line `StorageError`
naming zfs-fuse, never a command that waits forever.  Nothing is retried
silently except "busy", which zfs-fuse says for a few milliseconds after
an unmount.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from layerstore.errors import CommandFailed, StorageError, StorageFull
from layerstore.process import run_command

__all__ = [
    "BUSY_ATTEMPTS",
    "COMMAND_TIMEOUT",
    "ZfsCommands",
    "failure",
    "is_busy",
    "missing",
    "stderr_of",
]

BUSY_ATTEMPTS = 12
# Far above any command of a healthy daemon (a destroy of a large dataset on a
# loaded machine takes seconds); a daemon silent for this long is hung.
COMMAND_TIMEOUT = 600.0
_FIRST_DELAY = 0.02
_MAX_DELAY = 0.5


def stderr_of(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one-line stderr of a finished command."""
    return " ".join(proc.stderr.decode(errors="replace").split())


def missing(proc: subprocess.CompletedProcess[bytes]) -> bool:
    """True when a failed command said that its dataset does not exist (OpenZFS and zfs-fuse wording)."""
    return proc.returncode != 0 and b"does not exist" in proc.stderr


def is_busy(proc: subprocess.CompletedProcess[bytes]) -> bool:
    """True when a failed command said the dataset or mount is busy."""
    return proc.returncode != 0 and b"busy" in proc.stderr.lower()


def failure(proc: subprocess.CompletedProcess[bytes]) -> CommandFailed:
    """The `CommandFailed` error of a failed command (the command and its stderr)."""
    return CommandFailed(proc.args, proc.returncode, proc.stderr.decode(errors="replace"))


class ZfsCommands:
    """Runs zfs/zpool commands for one store: serialized by an flock on `lock_dir`, each within `timeout` seconds.

    Without `lock_dir` (before the store's home exists) commands are not
    serialized.  Every method raises `StorageError` when the daemon does not
    answer in time, and `CommandFailed` when the program is missing.
    """

    def __init__(self, lock_dir: Path | None = None, *, timeout: float = COMMAND_TIMEOUT) -> None:
        self.lock_dir = lock_dir
        self.timeout = timeout

    def run(self, argv: Sequence[str], *, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` alone (holding the store's command lock); with `check`, a failure raises `CommandFailed`."""
        fd = self._open_lock()
        if fd is None:
            proc = self._run(argv)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                proc = self._run(argv)
            finally:
                os.close(fd)
        if check and proc.returncode != 0:
            raise failure(proc)
        return proc

    def _open_lock(self) -> int | None:
        # A descriptor of its own per command: a held one would keep the
        # dataset of the home busy, and it also excludes this process's threads.
        # A home deleted under an open store has no other user left to wait for.
        if self.lock_dir is None:
            return None
        try:
            return os.open(self.lock_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        try:
            return run_command(argv, check=False, timeout=self.timeout)
        except CommandFailed as exc:
            if exc.returncode != -1:
                raise
        raise StorageError(
            f"zfs: `{' '.join(argv)}` got no answer within {self.timeout:g} s: the zfs daemon (zfs-fuse) "
            "is hung or overloaded; restart it (stop the zfs-fuse process, start it again) and run `gc`"
        )

    def checked(self, argv: Sequence[str], doing: str) -> None:
        """Run `argv`; on failure raise `StorageFull` (no space or quota) or `CommandFailed` naming `doing`."""
        proc = self.run(argv)
        if proc.returncode == 0:
            return
        err = proc.stderr.lower()
        if b"quota" in err or b"out of space" in err or b"no space" in err:
            raise StorageFull(f"zfs: cannot {doing}: {stderr_of(proc)}")
        raise failure(proc)

    def run_retrying_busy(
        self, argv: Sequence[str], attempts: int = BUSY_ATTEMPTS
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv`, retrying with short growing sleeps while it fails with "busy"; return the last result.

        zfs-fuse lets go of a dataset a few milliseconds after its FUSE mount is
        gone, so a ``destroy`` right after an ``unmount`` can see "dataset is
        busy" once; a dataset that stays busy is really held (the caller says
        by whom).  The lock is not held while sleeping.
        """
        delay = _FIRST_DELAY
        proc = self.run(argv)
        for _ in range(attempts - 1):
            if not is_busy(proc):
                break
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
            proc = self.run(argv)
        return proc

    def get_properties(self, dataset: str, names: Sequence[str]) -> dict[str, str] | None:
        """Read properties of `dataset` in one ``zfs get -H -p``; None when the dataset does not exist."""
        proc = self.run(["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(names), dataset])
        if missing(proc):
            return None
        if proc.returncode != 0:
            raise failure(proc)
        values = {}
        for line in proc.stdout.decode(errors="surrogateescape").splitlines():
            prop, _, value = line.partition("\t")
            values[prop] = value
        return values
