"""Run one measured command as a child process: wall time and the child's peak RSS.

The peak RSS is ``ru_maxrss`` of the measured process as reported by
``wait4``, which the kernel takes as the maximum over the process and the
descendants it waited for (so ``tar -xzf``'s gzip counts too).  The kernel
also counts the high-water mark of the memory image a process had before
``exec``: a child forked (or vforked) from this ~30 MB Python process would
never report less than that.  So the command is started through GNU
``/usr/bin/time -f %M`` (Debian package ``time``), a ~1 MB process that forks
it and reports the ``wait4`` figure; without it we fall back to our own
``wait4`` and say so in `Measurement.rss_source`.  Standard
output is either compared on the fly (exports: byte for byte with the
imported tar, read from the page cache, without being stored) or captured
(small outputs such as a new layer ID).  The comparison costs about a tenth
of what hashing would: a consumer that hashed (~2 GB/s with SHA extensions,
less through a pipe) took longer than the exporting tools themselves and
bounded every export figure alike.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_READ = 1 << 20
_SYNC_WAIT = 120.0  # seconds
DEFAULTS: dict[str, float | None] = {"timeout": None}
# Set when any command timed out since the last reset: the backend is then assumed hung.
STATE: dict[str, bool] = {"timed_out": False}
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else shutil.which("time")


@dataclass
class Measurement:
    """What one run of a command cost and produced."""

    argv: list[str]
    seconds: float
    maxrss_kb: int
    returncode: int
    stdout: str  # captured text, or "" when compared
    stdout_same: bool | None  # None unless compared: the output equals the file, byte for byte
    stdout_bytes: int
    stderr: str
    rss_source: str = "time"
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0

    def failure(self) -> str:
        """A one-line description of a failure (command and last stderr line)."""
        tail = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s, killed: {' '.join(self.argv[:6])}..."
        return f"exit {self.returncode} of {' '.join(self.argv[:6])}...: {tail[-1] if tail else '(no stderr)'}"


def _sync_twice() -> None:
    # The first sync writes a loop-mounted filesystem into its image file's page
    # cache on the host filesystem; the second writes that to the disk.
    os.sync()
    os.sync()


def _settle() -> None:
    """Untimed: write back what earlier commands left dirty, so that their writeback does not run on
    the next command's clock (every tool alike).  Given up after a while: a hung FUSE backend (zfs-fuse)
    must not hang the benchmark here, the per-command timeout deals with it."""
    syncing = threading.Thread(target=_sync_twice, name="bench-sync", daemon=True)
    syncing.start()
    syncing.join(_SYNC_WAIT)


def run_measured(
    argv: Sequence[str],
    *,
    stdin: Path | None = None,
    compare_stdout: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = -1.0,
) -> Measurement:
    """Run `argv` (no shell), feeding `stdin` (a file) or /dev/null, and measure it.

    With `compare_stdout` the output is compared with that file as it arrives
    (`Measurement.stdout_same`) instead of being captured.

    The command runs in its own process group; after `timeout` seconds, or
    when this process is interrupted, that group is killed (a process stuck
    on a hung FUSE backend dies only from SIGKILL).  The default timeout is
    `DEFAULTS["timeout"]`; None waits for ever.
    """
    if timeout is not None and timeout < 0:
        timeout = DEFAULTS["timeout"]
    rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False)  # noqa: SIM115
    rss_file.close()
    wrapped = [GNU_TIME, "-f", "%M", "-o", rss_file.name, "--", *argv] if GNU_TIME else list(argv)
    stdin_f = open(stdin, "rb") if stdin is not None else open(os.devnull, "rb")  # noqa: SIM115
    expected = open(compare_stdout, "rb", buffering=0) if compare_stdout is not None else None  # noqa: SIM115
    same = True
    captured = bytearray()
    total = 0
    _settle()
    with stdin_f, tempfile.TemporaryFile() as err, expected or contextlib.nullcontext():
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, stdin=stdin_f, stdout=subprocess.PIPE, stderr=err,
            env=None if env is None else {**os.environ, **env}, cwd=cwd, start_new_session=True,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = None if timeout is None else started + timeout
        timed_out = False
        try:
            while True:
                if deadline is not None:
                    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
                    if not ready:
                        timed_out = True
                        break
                chunk = os.read(fd, _READ)
                if not chunk:
                    break
                total += len(chunk)
                if expected is not None:
                    same = same and expected.read(len(chunk)) == chunk
                elif len(captured) < (1 << 20):
                    captured += chunk
            while not timed_out and deadline is not None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                else:
                    time.sleep(0.01)
            if timed_out:
                STATE["timed_out"] = True
                _kill_group(proc.pid)
            if timed_out or deadline is None:
                _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid)
            os.wait4(proc.pid, 0)
            raise
        elapsed = time.perf_counter() - started
        if expected is not None:
            same = same and expected.read(1) == b""
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        proc.stdout.close()
        err.seek(0)
        stderr = err.read()[-20000:].decode(errors="replace")
    maxrss_kb, source = usage.ru_maxrss, "wait4 (includes the forking Python's RSS)"
    with contextlib.suppress(OSError, ValueError, IndexError):
        # GNU time writes "Command exited with non-zero status N" before the figure on failures.
        maxrss_kb, source = int(Path(rss_file.name).read_text().split()[-1]), "time"
    os.unlink(rss_file.name)
    return Measurement(
        argv=list(argv),
        seconds=elapsed,
        maxrss_kb=maxrss_kb,
        returncode=proc.returncode,
        stdout="" if expected is not None else captured.decode(errors="replace"),
        stdout_same=same if expected is not None else None,
        stdout_bytes=total,
        stderr=stderr,
        rss_source=source,
        timed_out=timed_out,
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
