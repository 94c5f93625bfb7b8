"""Fixtures of the reliability tests: a store per driver, driven through the real `layerstore` executable.

`store` is parameterised by driver.  vfs runs in the ``core`` tox environment;
overlay (on a loop-mounted ext4) is marked ``integration`` so it runs where every
driver is installed.  A driver is added by appending a `pytest.param` to
`DRIVERS` and, when it needs a backend, a case to `_backing`.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from layerstore import available_drivers
from layerstore.fstree import remove_tree
from layerstore.image import is_valid_id
from layerstore.kit import is_atomic_temporary
from layerstore.process import run_command
from layerstore.testing import unavailable
from layerstore.testing.loop import LARGE_XATTRS, loop_filesystem_or_unavailable, mounts_under
from layerstore.testing.zfsfuse import zfs_fuse_pool

LAYERSTORE = str(Path(sys.executable).parent / "layerstore")
DRIVERS = [
    pytest.param("vfs", id="vfs"),
    pytest.param("overlay", id="overlay", marks=pytest.mark.integration),
    pytest.param("btrfs", id="btrfs", marks=pytest.mark.integration),
    # zfs-fuse is one daemon per machine: run these under `flock /tmp/layerstore-zfs.lock`.
    pytest.param("zfs", id="zfs", marks=pytest.mark.integration),
]
_counter = itertools.count()


@attrs.frozen
class Store:
    """A store root for one driver, and how to run `layerstore` on it."""

    driver: str
    root: Path
    env: dict[str, str]

    def run(self, *args: str | os.PathLike[str], input: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``layerstore ARGS`` on this store (never raises)."""
        return subprocess.run([LAYERSTORE, *map(str, args)], input=input, capture_output=True, env=self.env,
                              cwd=cwd, check=False, stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str | os.PathLike[str], input: bytes | None = None) -> str:
        """Run and require success; return stdout."""
        proc = self.run(*args, input=input)
        assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))
        return proc.stdout.decode()

    def popen(self, *args: str | os.PathLike[str], stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start ``layerstore ARGS`` without waiting (stop it by its own pid)."""
        return subprocess.Popen([LAYERSTORE, *map(str, args)], env=self.env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def _overlay_backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with loop_filesystem_or_unavailable("overlay", tmp_path_factory.mktemp("fault-ext4"), "ext4", 2048) as mnt:
        yield mnt


@pytest.fixture(scope="session")
def _btrfs_backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("fault-btrfs")
    with loop_filesystem_or_unavailable("btrfs", workdir, "btrfs", 2048, LARGE_XATTRS["btrfs"]) as mnt:
        yield mnt


@pytest.fixture(scope="session")
def _zfs_backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with zfs_fuse_pool(tmp_path_factory.mktemp("fault-zfs"), 1024) as pool:
        yield pool


def _zfs_dataset(request: pytest.FixtureRequest) -> Path:
    """A fresh dataset of the session's pool (each store its own parent dataset), destroyed after the test."""
    pool, mountpoint = request.getfixturevalue("_zfs_backing")
    name = f"s{next(_counter)}"
    path = mountpoint / name
    run_command(["zfs", "create", "-o", f"mountpoint={path}", f"{pool}/{name}"])

    def destroy() -> None:
        for _ in range(40):
            if run_command(["zfs", "destroy", "-r", "-R", "-f", f"{pool}/{name}"], check=False).returncode == 0:
                return
            time.sleep(0.05)

    request.addfinalizer(destroy)
    return path


def _backing(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if driver == "overlay":
        if os.geteuid() != 0:
            unavailable("overlay", "needs root")
        base: Path = request.getfixturevalue("_overlay_backing")
        return base
    if driver == "btrfs":
        btrfs_base: Path = request.getfixturevalue("_btrfs_backing")
        return btrfs_base
    if driver == "zfs":
        return _zfs_dataset(request)
    return tmp_path


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of the parameter's driver; fails the test if a mount is left under it."""
    driver: str = request.param
    if driver not in available_drivers():
        unavailable(driver, f"the layerstore-{driver} distribution is not installed")
    root = _backing(driver, request, tmp_path) / f"store-{next(_counter)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
    env.update(LAYERSTORE_ROOT=str(root), LAYERSTORE_DRIVER=driver, LAYERSTORE_RUNROOT=str(tmp_path / "run"),
               XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    store = Store(driver, root, env)
    probe = store.run("ls")
    if probe.returncode != 0:
        unavailable(driver, probe.stderr.decode(errors="replace").strip())
    yield store
    leaked = mounts_under(root)
    for mount_point in sorted(leaked, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False)
    # Deep trees a failed test left would break pytest's own (recursive) clean-up of old temporary dirs.
    remove_tree(root)
    if leaked:
        pytest.fail(f"mounts left behind under {root}: {', '.join(leaked)}")


# btrfs and zfs need their own backend, not a tmpfs: their full-filesystem tests are in
# plugins/btrfs/tests/test_btrfs_full.py and plugins/zfs/tests/test_zfs_full.py.
@pytest.fixture(params=[p for p in DRIVERS if p.values[0] in ("vfs", "overlay")])
def small_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store on its own 24 MiB tmpfs (unmounted afterwards)."""
    driver: str = request.param
    if driver not in available_drivers():
        unavailable(driver, f"the layerstore-{driver} distribution is not installed")
    if os.geteuid() != 0:
        unavailable(driver, "mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt], check=True)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
        env.update(LAYERSTORE_ROOT=str(mnt / "store"), LAYERSTORE_DRIVER=driver,
                   LAYERSTORE_RUNROOT=str(tmp_path / "run"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
        store = Store(driver, mnt / "store", env)
        probe = store.run("ls")
        if probe.returncode != 0:
            unavailable(driver, probe.stderr.decode(errors="replace").strip())
        yield store
    finally:
        subprocess.run(["umount", "-R", "-l", mnt], check=False)


_LEFTOVER_PREFIXES = (".tmp-", ".trash-", ".new-", ".diff-copy-")
_SCRATCH_DIRS = (".staging", ".deleting")  # overlay's staging and trash: empty once gc ran


def leftovers(store: Store) -> list[str]:
    """What killed processes left and `gc` must remove: the graph's staging, the driver's staging and trash,
    and the image store's staging and temporary files of atomic writes (also in image directories)."""
    staging = store.root / "graph" / "_tmp"
    found = [f"graph/_tmp/{n}" for n in os.listdir(staging)] if staging.is_dir() else []
    stack = [(store.root / store.driver, 0)] if (store.root / store.driver).is_dir() else []
    while stack:
        path, depth = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                if entry.name.startswith(_LEFTOVER_PREFIXES) or path.name in _SCRATCH_DIRS:
                    found.append(entry.path)
                elif depth < 2 and entry.is_dir(follow_symlinks=False) and entry.name != "l":
                    stack.append((Path(entry.path), depth + 1))
    for top in ("images", "graph"):
        base = store.root / top
        names = os.listdir(base) if base.is_dir() else []
        found += [f"{top}/{n}" for n in names if is_atomic_temporary(n) or n.startswith(".tmp-")]
        for name in names:
            if is_valid_id(name) and (base / name).is_dir():
                found += [f"{top}/{name}/{n}" for n in os.listdir(base / name) if is_atomic_temporary(n)]
    return found


def check_after_kills(store: Store, context: tuple[object, ...]) -> None:
    """After a trial's kills: `check` passes, `gc` leaves no leftover, and `check` then lists no orphan.

    `context` (the seed and the trial, say) is shown with any failure.
    """
    check = store.run("check")
    assert check.returncode == 0, (*context, check.stdout.decode(), check.stderr.decode())
    store.ok("gc")
    assert leftovers(store) == [], context
    after = store.run("check")
    assert after.returncode == 0 and b"orphan" not in after.stdout, (*context, after.stdout.decode())
