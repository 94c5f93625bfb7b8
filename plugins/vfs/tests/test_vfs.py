"""What is peculiar to vfs: options, its on-disk layout, crash leftovers (the copy itself is tested with the kit)."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from layerstore import CreateOpts, Driver, load_driver
from layerstore.errors import ConfigError, DriverNotSupported, StorageFull
from layerstore.kit import probe_reflink
from layerstore_vfs import driver as vfs_driver_module

BASE, CHILD = "b" * 64, "c" * 64


@pytest.fixture
def vfs(tmp_path: Path) -> Driver:
    return load_driver("vfs", tmp_path / "home")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'colour' for driver vfs"):
        load_driver("vfs", tmp_path, {"colour": "blue"})
    with pytest.raises(ConfigError, match="bad value 'fast' for vfs option 'copy'"):
        load_driver("vfs", tmp_path, {"copy": "fast"})


def test_forcing_reflink_where_unsupported_says_why(ext4_mount: Path) -> None:
    home = Path(tempfile.mkdtemp(dir=ext4_mount))  # ext4 cannot clone files
    assert not probe_reflink(str(home))
    with pytest.raises(DriverNotSupported, match="cannot clone files"):
        load_driver("vfs", home, {"copy": "reflink"})


def test_storage_options_are_refused(vfs: Driver) -> None:
    with pytest.raises(ConfigError, match="'size'"):
        vfs.create(BASE, None, CreateOpts(storage_opts={"size": "10M"}))
    assert not vfs.exists(BASE)


def test_layout_metadata_and_status(vfs: Driver) -> None:
    vfs.create(BASE)
    vfs.create(CHILD, BASE)
    assert vfs.get(CHILD) == str(vfs.home / "dir" / CHILD)
    vfs.put(CHILD)
    assert vfs.metadata(CHILD) == {"dir": str(vfs.home / "dir" / CHILD)}
    assert vfs.parent(CHILD) == BASE
    status = dict(vfs.status())
    assert status["Layers"] == "2"
    assert status["Backing Filesystem"] not in ("", "unknown")
    vfs.remove(CHILD)
    vfs.remove(BASE)
    assert os.listdir(vfs.home / "dir") == []


def _stale(area: Path, name: str) -> Path:
    """A staging or trash entry left by a killed process: its lock file exists, nobody holds it."""
    entry = area / name
    (entry / "sub").mkdir(parents=True)
    (entry / "sub" / "file").write_bytes(b"x")
    (area / f"{name}.lock").touch()
    return entry


def test_leftovers_are_removed_by_gc_unless_locked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    driver = load_driver("vfs", home)
    _stale(home / "staging", f"{BASE}.0001")
    _stale(home / "trash", f"{CHILD}.0002")
    busy = _stale(home / "staging", f"{CHILD}.0003")
    fd = os.open(f"{busy}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert not driver.exists(BASE) and not driver.exists(CHILD)
        assert driver.gc() == [f"vfs staging leftover {BASE}.0001", f"vfs trash leftover {CHILD}.0002"]
        assert os.listdir(home / "trash") == []
        assert sorted(os.listdir(home / "staging")) == [busy.name, f"{busy.name}.lock"], "a busy entry was removed"
    finally:
        os.close(fd)
    assert load_driver("vfs", home).gc() == [f"vfs staging leftover {CHILD}.0003"]
    assert os.listdir(home / "staging") == []


def test_half_removed_layer_does_not_exist(vfs: Driver) -> None:
    vfs.create(BASE)
    (vfs.home / "trash").mkdir(exist_ok=True)
    os.rename(vfs.home / "dir" / BASE, vfs.home / "trash" / f"{BASE}.0001")
    assert not vfs.exists(BASE)
    assert vfs.gc() == [f"vfs trash leftover {BASE}.0001"]
    assert os.listdir(vfs.home / "trash") == []


def test_failed_copy_leaves_nothing(vfs: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    vfs.create(BASE)
    with vfs.mounted(BASE) as path:
        Path(path, "f").write_bytes(b"data")

    def no_space(src: object, dst: object, *, method: str = "") -> None:
        Path(dst, "partial").write_bytes(b"half")  # type: ignore[arg-type]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vfs_driver_module, "copy_tree", no_space)
    with pytest.raises(StorageFull, match=CHILD):
        vfs.create(CHILD, BASE)
    assert not vfs.exists(CHILD)
    assert os.listdir(vfs.home / "dir") == [BASE]
    assert os.listdir(vfs.home / "staging") == []
    vfs.remove(BASE)  # no child mark was left behind




def _depth(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while "d" in os.listdir(fd):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            depth += 1
    finally:
        os.close(fd)
    return depth


def test_child_of_a_5000_deep_tree_and_its_removal(vfs: Driver) -> None:
    """No recursion per path level: creating a child copies, and removing deletes, a tree deeper than PATH_MAX."""
    vfs.create(BASE)
    with vfs.mounted(BASE) as path:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(5000):
                os.mkdir("d", dir_fd=fd)
                child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = child
        finally:
            os.close(fd)
    vfs.create(CHILD, BASE)
    with vfs.mounted(CHILD) as path:
        assert _depth(path) == 5000
    vfs.remove(CHILD)
    vfs.remove(BASE)
    assert os.listdir(vfs.home / "dir") == [] and os.listdir(vfs.home / "trash") == []
