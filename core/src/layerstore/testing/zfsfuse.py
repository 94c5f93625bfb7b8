"""A private zfs-fuse daemon and a throw-away pool on a sparse file, for tests.

`zfs_fuse_daemon` starts Debian's ``zfs-fuse`` in the foreground (so that
the child's pid is the daemon's pid) and stops exactly that pid afterwards;
when a zfs-fuse that this process did not start is already running it is
used as it is and never stopped.  `zfs_fuse_pool` creates a pool with a
unique name on a sparse file vdev, with ``cachefile=none`` so that nothing
is written to the system's pool cache, and destroys pool, mounts and file
afterwards, also when the test failed.

When zfs-fuse cannot run here (program missing, no /dev/fuse, not root, the
daemon does not come up) both call `layerstore.testing.unavailable`, which
skips on a developer machine and fails in CI.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import CommandFailed
from ..mountinfo import read_mountinfo
from ..process import run_command
from . import unavailable

__all__ = ["running_zfs_fuse_pids", "zfs_fuse_daemon", "zfs_fuse_mounts", "zfs_fuse_pool"]

_DRIVER = "zfs"
_STARTUP_SECONDS = 30.0
_STOP_SECONDS = 30.0
# Far above what a command of a healthy daemon takes on a loaded machine.
_COMMAND_SECONDS = 300.0
# Debian's zfs-fuse 0.7 only supports extended attributes when asked to; the
# conformance suite needs them (user.*, security.capability, trusted.*).
_DAEMON_ARGS = ("--no-daemon", "--no-kstat-mount", "--enable-xattr")


def running_zfs_fuse_pids() -> list[int]:
    """Return the pids of every running ``zfs-fuse`` process (read from /proc, like ``pgrep -x zfs-fuse``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path("/proc", entry, "comm").read_text().strip()
        except OSError:
            continue
        if comm == "zfs-fuse":
            pids.append(int(entry))
    return sorted(pids)


def zfs_fuse_mounts() -> list[tuple[str, str]]:
    """Return (source, mount point) of every zfs-fuse mount (type ``fuse.zfs``)."""
    return [(e.source, e.mountpoint) for e in read_mountinfo() if e.fstype == "fuse.zfs"]


def _pool_answers() -> tuple[bool, str]:
    try:
        proc = run_command(["zpool", "list", "-H", "-o", "name"], check=False, timeout=10)
    except CommandFailed as exc:
        return False, str(exc)
    return proc.returncode == 0, proc.stderr.decode(errors="replace").strip()


def _check_prerequisites() -> None:
    for program in ("zfs-fuse", "zfs", "zpool"):
        if shutil.which(program) is None:
            unavailable(_DRIVER, f"{program}: command not found (install the Debian package zfs-fuse)")
    if os.geteuid() != 0:
        unavailable(_DRIVER, "zfs-fuse needs root")
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        unavailable(_DRIVER, f"/dev/fuse cannot be opened: {exc.strerror}")
    os.close(fd)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        # On SIGTERM zfs-fuse unmounts its file systems and exports its pools.
        proc.wait(timeout=_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _detach_mounts(before: set[tuple[str, str]]) -> None:
    # After the daemon is gone its mounts (if any survived a SIGKILL) are dead
    # FUSE endpoints; detach those that appeared while it ran.
    for source, mountpoint in reversed(zfs_fuse_mounts()):
        if (source, mountpoint) not in before:
            run_command(["umount", "-l", mountpoint], check=False)


@contextlib.contextmanager
def zfs_fuse_daemon(workdir: Path) -> Iterator[int | None]:
    """Make a zfs-fuse daemon available for the duration of the block.

    Yields the pid of the daemon this call started, or None when a zfs-fuse
    that this process did not start was already running and answering (it is
    used, and left running).  A started daemon runs in the foreground with
    its log in `workdir`; on exit it gets SIGTERM, then SIGKILL after a
    timeout, and any of its mounts that survived are detached.  Only that pid
    is ever signalled.
    """
    _check_prerequisites()
    if running_zfs_fuse_pids():
        ok, detail = _pool_answers()
        if not ok:
            unavailable(_DRIVER, f"a zfs-fuse daemon not started by the tests is running but not answering: {detail}")
        yield None
        return

    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "zfs-fuse.log"
    mounts_before = set(zfs_fuse_mounts())
    with open(log_path, "wb") as log:
        # setpriv (util-linux) execs zfs-fuse in place with a parent-death
        # signal: a test run killed before its finalizers (timeout, SIGKILL)
        # does not leave the daemon behind.
        launcher = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        proc = subprocess.Popen(
            [*launcher, "zfs-fuse", *_DAEMON_ARGS],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + _STARTUP_SECONDS
        detail = ""
        while True:
            if proc.poll() is not None:
                log_text = " ".join(log_path.read_text(errors="replace").split())
                unavailable(_DRIVER, f"zfs-fuse exited with status {proc.returncode} at start: {log_text}")
            ok, detail = _pool_answers()
            if ok:
                break
            if time.monotonic() > deadline:
                unavailable(_DRIVER, f"zfs-fuse (pid {proc.pid}) did not answer `zpool list`: {detail}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        _stop(proc)
        _detach_mounts(mounts_before)


def _retry_busy(argv: list[str], attempts: int = 40) -> subprocess.CompletedProcess[bytes]:
    # zfs-fuse releases a dataset a moment after its FUSE mount goes away:
    # "busy" right after an unmount is normal and passes within milliseconds.
    # A daemon that does not answer at all is hung: the command fails after
    # _COMMAND_SECONDS instead of keeping the finalizers from running.
    delay = 0.02
    for _ in range(attempts - 1):
        proc = _run_bounded(argv)
        if proc.returncode == 0 or b"busy" not in proc.stderr:
            return proc
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return _run_bounded(argv)


def _run_bounded(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return run_command(argv, check=False, timeout=_COMMAND_SECONDS)
    except CommandFailed as exc:
        return subprocess.CompletedProcess(argv, exc.returncode, b"", exc.stderr.encode())


@contextlib.contextmanager
def zfs_fuse_pool(workdir: Path, size_mb: int = 512) -> Iterator[tuple[str, Path]]:
    """Yield ``(pool_name, mountpoint)`` of a fresh zfs pool on a sparse file in `workdir`.

    The pool's name is unique (``lstest<hex>``), its root dataset is mounted
    at ``<workdir>/mnt``, and it lives on a zfs-fuse daemon started by
    `zfs_fuse_daemon` (or an already running one).  On exit the pool is
    destroyed (``zpool destroy -f``), leftover mounts below the mount point
    are detached and the file is removed, also when the block raised.
    """
    if size_mb < 64:
        raise ValueError(f"a zfs pool needs at least 64 MB, got size_mb={size_mb}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with zfs_fuse_daemon(workdir):
        name = f"lstest{secrets.token_hex(5)}"
        vdev = workdir / f"{name}.img"
        mountpoint = workdir / "mnt"
        mountpoint.mkdir(exist_ok=True)
        with open(vdev, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        try:
            proc = _run_bounded(
                ["zpool", "create", "-f", "-o", "cachefile=none", "-m", str(mountpoint), name, str(vdev)]
            )
            if proc.returncode != 0:
                unavailable(_DRIVER, f"zpool create failed: {' '.join(proc.stderr.decode(errors='replace').split())}")
            try:
                yield name, mountpoint
            finally:
                destroyed = _retry_busy(["zpool", "destroy", "-f", name])
                for _source, mounted in reversed(zfs_fuse_mounts()):
                    if mounted == str(mountpoint) or mounted.startswith(f"{mountpoint}/"):
                        run_command(["umount", "-l", mounted], check=False)
                if destroyed.returncode != 0:
                    raise CommandFailed(
                        ["zpool", "destroy", "-f", name],
                        destroyed.returncode,
                        destroyed.stderr.decode(errors="replace"),
                    )
        finally:
            vdev.unlink(missing_ok=True)
