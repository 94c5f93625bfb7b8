"""Crash safety: create, apply_diff and remove in a child process killed (SIGKILL) at several points.

These tests create tens of thousands of files: point ``layerstore_root``
(``--layerstore-root``) at the driver's real backend, not a slow root
filesystem.

After each kill the driver is opened again, as a new process would: the
layer must exist whole or not exist at all, ``remove`` and ``create`` of the
same ID must work, and the driver's ``gc`` hook must leave nothing of the
killed operation under the driver home.  A driver passes by building a
layer under a private name and publishing it with one rename (or a
snapshot), and by renaming a layer out of sight before deleting it
(`layerstore.kit.ScratchArea`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layerstore.drivers import Driver

from ._base import DriverSpec, MakeDriver
from ._references import _factory_reference
from ._support import new_id

CRASH_FILES = 20_000
"""Files in the parent of the crash tests: enough that copying or extracting them takes a while."""
KILL_DELAYS = (0.0, 0.1, 0.4)
"""Seconds between the child's "ready" (the operation starts) and SIGKILL: the kill points."""
_PER_DIR = 1000
_MARKER = "crash-marker"


def _big_tar(path: Path, tag: str) -> Path:
    """A layer tar of `CRASH_FILES` small files in directories of 1000, plus a marker file, streamed to `path`."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(CRASH_FILES // _PER_DIR):
            info = tarfile.TarInfo(f"d{d:02d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tar.addfile(info)
        for n in range(CRASH_FILES):
            data = f"{tag} {n}\n".encode()
            info = tarfile.TarInfo(f"d{n // _PER_DIR:02d}/f{n:05d}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tar.addfile(info, _Bytes(data))
        data = f"{tag}\n".encode()
        info = tarfile.TarInfo(_MARKER)
        info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
        tar.addfile(info, _Bytes(data))
    return path


class _Bytes:
    """A minimal file object over bytes for `tarfile.addfile` (avoids a BytesIO per member)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data


def _whole(driver: Driver, layer: str, tag: str) -> str | None:
    """None when `layer` holds all `CRASH_FILES` files of the tar tagged `tag`; else what is wrong."""
    with driver.mounted(layer) as path:
        try:
            with open(os.path.join(path, _MARKER), "rb") as f:
                marker = f.read()
        except FileNotFoundError:
            marker = b""
        count = sum(len(files) for _, _, files in os.walk(path)) - (1 if marker else 0)
    if marker != f"{tag}\n".encode() or count != CRASH_FILES:
        return f"{count} of {CRASH_FILES} files, marker {marker!r}"
    return None


def _empty(driver: Driver, layer: str) -> bool:
    with driver.mounted(layer) as path:
        return not os.listdir(path)


def _home_paths(home: Path) -> set[str]:
    """What the driver home holds: every non-directory, and the non-empty directories outside ``.layerstore``.

    Empty directories are harmless and the facade's lock stripes stay by design.
    """
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(home):
        rel = os.path.relpath(dirpath, home)
        if rel == os.path.join(".layerstore", "locks"):
            dirnames.clear()
            continue
        if (dirnames or filenames) and rel != "." and not rel.startswith(".layerstore"):
            found.add(rel)
        found.update(os.path.join(rel, name) for name in filenames)
        found.update(os.path.join(rel, name) for name in dirnames if os.path.islink(os.path.join(dirpath, name)))
    return found


def _id_reusable_and_nothing_left(driver: Driver, layer: str, live: list[str], before: set[str], what: str) -> None:
    """`layer` can be created and removed again, and after ``gc`` the home holds what it held `before`."""
    driver.create(layer)
    driver.remove(layer)
    driver.gc(live)
    left = _home_paths(driver.home) - before
    assert not left, f"after {what}, gc left {sorted(left)[:5]} in the driver home"
    assert driver.orphans() == [], f"after {what} and gc, the orphans hook still reports leftovers"


class _Crasher:
    """Runs one operation in a child process and kills it `delay` seconds after it starts."""

    def __init__(self, spec: DriverSpec, home: Path) -> None:
        self.spec = spec
        self.home = home

    def run(self, op: str, layer: str, parent: str | None, delay: float, tar: Path | None = None) -> bool:
        """Start `op`, SIGKILL the child after `delay`; True if the operation finished before the kill."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        spec = {
            "name": self.spec.name,
            "factory": _factory_reference(self.spec),
            "home": str(self.home),
            "options": dict(self.spec.options),
            "op": op,
            "layer": layer,
            "parent": parent,
            "tar": str(tar) if tar is not None else None,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "layerstore.conformance._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            if proc.stdout.readline().strip() != "ready":
                _, err = proc.communicate()
                pytest.fail(f"the crash-test child could not open driver {self.spec.name!r}:\n{err}", pytrace=False)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"{op} failed in the crash-test child (exit {proc.returncode}):\n{err}", pytrace=False)
        return "done" in out.split()


class CrashTests:
    """A killed create, apply_diff or remove leaves every layer whole or absent, and nothing gc cannot collect."""

    def _setup(
        self, driver: Driver, make_driver: MakeDriver, tmp_path: Path
    ) -> tuple[str, Path, Callable[[], Driver], _Crasher]:
        tar = _big_tar(tmp_path / "parent.tar", "parent")
        parent = new_id()
        driver.create(parent)
        with open(tar, "rb") as stream:
            driver.apply_diff(parent, None, stream)
        home = driver.home

        def reopen() -> Driver:
            return make_driver(home=home)

        return parent, tar, reopen, _Crasher(make_driver.spec, home)

    @pytest.mark.layerstore_requires("crash-tests")
    def test_killed_create_leaves_child_whole_or_absent(
        self, driver: Driver, make_driver: MakeDriver, tmp_path: Path
    ) -> None:
        parent, _, reopen, crasher = self._setup(driver, make_driver, tmp_path)
        before = _home_paths(driver.home)
        for delay in KILL_DELAYS:
            child = new_id()
            finished = crasher.run("create", child, parent, delay)
            again = reopen()
            if again.exists(child):
                problem = _whole(again, child, "parent")
                assert problem is None, (
                    f"create killed after {delay}s left layer {child} existing but incomplete ({problem}): "
                    "build a layer under a private name and rename it into place when complete"
                )
                again.remove(child)
            else:
                assert not finished, f"create of {child} returned, but the layer does not exist"
            _id_reusable_and_nothing_left(again, child, [parent], before, f"a create killed after {delay}s")

    @pytest.mark.layerstore_requires("crash-tests")
    def test_killed_apply_diff_leaves_layer_whole_or_absent(
        self, driver: Driver, make_driver: MakeDriver, tmp_path: Path
    ) -> None:
        tar = _big_tar(tmp_path / "layer.tar", "layer")
        home = driver.home
        crasher = _Crasher(make_driver.spec, home)
        before = _home_paths(home)
        for delay in KILL_DELAYS:
            layer = new_id()
            driver.create(layer)
            finished = crasher.run("apply_diff", layer, None, delay, tar)
            again = make_driver(home=home)
            if again.exists(layer):
                problem = _whole(again, layer, "layer")
                assert problem is None or (not finished and _empty(again, layer)), (
                    f"apply_diff killed after {delay}s left layer {layer} existing but half-applied ({problem})"
                )
                again.remove(layer)
            else:
                assert not finished, f"apply_diff into {layer} returned, but the layer does not exist"
            _id_reusable_and_nothing_left(again, layer, [], before, f"an apply_diff killed after {delay}s")

    @pytest.mark.layerstore_requires("crash-tests")
    def test_killed_remove_leaves_layer_whole_or_absent(
        self, driver: Driver, make_driver: MakeDriver, tmp_path: Path
    ) -> None:
        parent, _, reopen, crasher = self._setup(driver, make_driver, tmp_path)
        before = _home_paths(driver.home)
        for delay in KILL_DELAYS:
            child = new_id()
            driver.create(child, parent)
            finished = crasher.run("remove", child, None, delay)
            again = reopen()
            if again.exists(child):
                assert not finished, f"remove of {child} returned, but the layer still exists"
                problem = _whole(again, child, "parent")
                assert problem is None, (
                    f"remove killed after {delay}s left layer {child} existing but half-deleted ({problem}): "
                    "rename a layer out of sight before deleting it"
                )
                again.remove(child)
            _id_reusable_and_nothing_left(again, child, [parent], before, f"a remove killed after {delay}s")
