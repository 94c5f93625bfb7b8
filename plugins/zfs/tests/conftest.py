"""Fixtures of the zfs driver's tests: one zfs-fuse daemon and pool per session, one dataset per test."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.process import run_command
from layerstore.testing.zfsfuse import running_zfs_fuse_pids, zfs_fuse_daemon, zfs_fuse_mounts, zfs_fuse_pool

_counter = itertools.count()
# A daemon silent this long is hung: the command fails, and the pool and daemon
# finalizers then stop it by its pid and detach its mounts.
_COMMAND_SECONDS = 300


@pytest.fixture(scope="session")
def zfs_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int | None]:
    """The session's zfs-fuse daemon: its pid, or None when one the tests did not start is used (and left alone)."""
    workdir = tmp_path_factory.mktemp("zfsd")
    with zfs_fuse_daemon(workdir) as pid:
        yield pid
    if pid is not None:
        assert pid not in running_zfs_fuse_pids(), f"zfs-fuse pid {pid} still running"


@pytest.fixture(scope="session")
def zfs_pool(zfs_daemon: int | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A zfs-fuse pool for the whole session; afterwards nothing of it may be left."""
    workdir = tmp_path_factory.mktemp("zfs")
    with zfs_fuse_pool(workdir, 1024) as (pool, mountpoint):
        yield pool, mountpoint
    # The finalizer's own check: no mount of our pool, no vdev file.
    left = [m for m in zfs_fuse_mounts() if m[0] == pool or m[0].startswith(f"{pool}/")]
    assert not left, f"mounts of pool {pool} left: {left}"
    assert not list(workdir.glob("*.img")), "pool vdev file left"


@pytest.fixture
def zfs_root(zfs_pool: tuple[str, Path]) -> Iterator[Path]:
    """A fresh dataset (mounted directory) for one test; destroyed with everything in it afterwards."""
    pool, mountpoint = zfs_pool
    name = f"t{next(_counter)}"
    dataset = f"{pool}/{name}"
    path = mountpoint / name
    run_command(["zfs", "create", "-o", f"mountpoint={path}", dataset], timeout=_COMMAND_SECONDS)
    try:
        yield path
    finally:
        # -R: layers left by a failed test are clones of each other; -f: they may still be mounted.
        for _ in range(20):
            destroy = run_command(["zfs", "destroy", "-r", "-R", "-f", dataset], check=False, timeout=_COMMAND_SECONDS)
            if destroy.returncode == 0:
                break
            time.sleep(0.05)
        else:
            run_command(["zfs", "destroy", "-r", "-R", "-f", dataset], timeout=_COMMAND_SECONDS)
        shutil.rmtree(path, ignore_errors=True)
