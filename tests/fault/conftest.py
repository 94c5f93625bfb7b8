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
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from layerstore import available_drivers
from layerstore.fstree import remove_tree
from layerstore.testing import unavailable
from layerstore.testing.loop import loop_filesystem_or_unavailable, mounts_under

LAYERSTORE = str(Path(sys.executable).parent / "layerstore")
DRIVERS = [
    pytest.param("vfs", id="vfs"),
    pytest.param("overlay", id="overlay", marks=pytest.mark.integration),
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


def _backing(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if driver == "overlay":
        if os.geteuid() != 0:
            unavailable("overlay", "needs root")
        base: Path = request.getfixturevalue("_overlay_backing")
        return base
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
