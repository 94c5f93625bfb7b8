"""A completely full filesystem: the user can still look, verify honestly and free space with the tool."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore import available_drivers
from layerstore.testing import unavailable

from .conftest import DRIVERS, Store
from .test_references import base_and_child


@pytest.fixture(params=DRIVERS)
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


def _fill(directory: Path) -> Path:
    """Write until the filesystem is full, then also use up the inodes; return the filler directory."""
    filler = directory / "filler"
    filler.mkdir()
    fd = os.open(filler / "blob", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    for n in range(100_000):
        try:
            (filler / f"i{n}").touch()
        except OSError as exc:
            assert exc.errno in (errno.ENOSPC, errno.EDQUOT)
            break
    return filler


def test_commands_work_on_a_full_filesystem(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    base, child = base_and_child(store)
    filler = _fill(store.root.parent)
    try:
        listing = store.ok("ls")
        assert base[:12] in listing and child[:12] in listing
        check = store.run("check")
        text = check.stdout.decode()
        assert "FAILED" not in text, text  # never a false corruption report
        out = tmp_path / "child.tar"
        store.ok("export", child, "-o", out)
        assert out.stat().st_size > 0
        path = Path(store.ok("mount", child).strip())
        assert (path / "b").read_bytes() == b"child b\n"
        store.ok("umount", child)
        store.ok("rm", child)  # frees space with the tool
        store.ok("gc")
    finally:
        subprocess.run(["rm", "-rf", filler], check=True)
    store.ok("rm", base)
    store.ok("check")


def test_no_space_is_named_not_blamed_on_the_store(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    base_and_child(store)
    filler = _fill(store.root.parent)
    try:
        proc = store.run("import", "-", input=b"\0" * 10240)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    finally:
        subprocess.run(["rm", "-rf", filler], check=True)
    assert store.ok("check")
