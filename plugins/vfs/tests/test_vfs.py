"""What is peculiar to vfs: options, its on-disk layout, crash leftovers, the copy methods."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

import pytest

from layerstore import CreateOpts, Driver, load_driver
from layerstore.errors import ConfigError, DriverNotSupported, LayerInUse, StorageFull
from layerstore_vfs import _copy
from layerstore_vfs._copy import TreeCopier, probe_reflink

BASE, CHILD = "b" * 64, "c" * 64


@pytest.fixture
def vfs(tmp_path: Path) -> Driver:
    return load_driver("vfs", tmp_path / "home")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'colour' for driver vfs"):
        load_driver("vfs", tmp_path, {"colour": "blue"})
    with pytest.raises(ConfigError, match="bad value 'fast' for vfs option 'copy'"):
        load_driver("vfs", tmp_path, {"copy": "fast"})


def test_forcing_reflink_where_unsupported_says_why(tmp_path: Path) -> None:
    if probe_reflink(str(tmp_path)):
        pytest.skip(f"{tmp_path} supports reflinks here")
    with pytest.raises(DriverNotSupported, match="cannot clone files"):
        load_driver("vfs", tmp_path, {"copy": "reflink"})


def test_storage_options_are_refused(vfs: Driver) -> None:
    with pytest.raises(ConfigError, match="'size'"):
        vfs.create(BASE, None, CreateOpts(storage_opts={"size": "10M"}))
    assert not vfs.exists(BASE)


def test_layout_metadata_and_status(vfs: Driver) -> None:
    vfs.create(BASE)
    vfs.create(CHILD, BASE)
    assert vfs.get(CHILD) == str(vfs.home / "dir" / CHILD)
    vfs.put(CHILD)
    assert vfs.metadata(CHILD) == {"dir": str(vfs.home / "dir" / CHILD), "parent": BASE}
    assert (vfs.home / "parents" / CHILD).read_text() == BASE
    assert (vfs.home / "children" / BASE / CHILD).exists()
    status = dict(vfs.status())
    assert status["Layers"] == "2"
    assert status["Backing Filesystem"] not in ("", "unknown")
    vfs.remove(CHILD)
    assert not (vfs.home / "children" / BASE).exists()
    assert not (vfs.home / "parents" / CHILD).exists()
    vfs.remove(BASE)
    assert os.listdir(vfs.home / "dir") == []


def test_leftovers_are_removed_at_start_unless_locked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    load_driver("vfs", home)
    layers = home / "dir"
    stale_tmp = layers / f".tmp-{BASE}-0001"
    stale_trash = layers / f".trash-{CHILD}-0002"
    busy = layers / f".tmp-{CHILD}-0003"
    for d in (stale_tmp, stale_trash, busy):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "file").write_bytes(b"x")
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        driver = load_driver("vfs", home)
        assert sorted(os.listdir(layers)) == [busy.name], "stale leftovers stayed, or a busy one was removed"
        assert not driver.exists(BASE) and not driver.exists(CHILD)
    finally:
        os.close(fd)
    load_driver("vfs", home)
    assert os.listdir(layers) == []


def test_half_removed_layer_does_not_exist(vfs: Driver) -> None:
    vfs.create(BASE)
    os.rename(vfs.home / "dir" / BASE, vfs.home / "dir" / f".trash-{BASE}-0001")
    assert not vfs.exists(BASE)
    load_driver("vfs", vfs.home)
    assert os.listdir(vfs.home / "dir") == []


def test_stale_child_mark_does_not_block_removal(vfs: Driver) -> None:
    vfs.create(BASE)
    (vfs.home / "children" / BASE).mkdir()
    (vfs.home / "children" / BASE / CHILD).touch()  # left by a process killed while creating CHILD
    vfs.remove(BASE)
    assert not vfs.exists(BASE)


def test_child_being_created_blocks_removal_of_its_parent(vfs: Driver) -> None:
    vfs.create(BASE)
    (vfs.home / "children" / BASE).mkdir()
    (vfs.home / "children" / BASE / CHILD).touch()
    (vfs.home / "dir" / f".tmp-{CHILD}-0001").mkdir()
    with pytest.raises(LayerInUse, match=CHILD):
        vfs.remove(BASE)


def test_failed_copy_leaves_nothing(vfs: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    vfs.create(BASE)
    with vfs.mounted(BASE) as path:
        Path(path, "f").write_bytes(b"data")

    def no_space(self: TreeCopier, src: str, dst: str) -> None:
        Path(dst, "partial").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TreeCopier, "copy_tree", no_space)
    with pytest.raises(StorageFull, match=CHILD):
        vfs.create(CHILD, BASE)
    assert not vfs.exists(CHILD)
    assert os.listdir(vfs.home / "dir") == [BASE]
    assert not (vfs.home / "parents" / CHILD).exists()
    assert not (vfs.home / "children" / BASE).exists()


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "small").write_bytes(b"small")
    (src / "empty").write_bytes(b"")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    return src


@pytest.mark.parametrize("method", _copy.COPY_METHODS)
def test_every_copy_method_copies_data(tmp_path: Path, method: str) -> None:
    src = _tree(tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    copier = TreeCopier(method)
    copier.copy_tree(str(src), str(dst))
    for name in ("big", "small", "empty"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert stat.S_ISSOCK(os.lstat(dst / "sock").st_mode)
    if method != "reflink" or probe_reflink(str(tmp_path)):
        assert copier.method == method
    else:
        assert copier.method == "copy_file_range", "an unsupported reflink was not demoted once"


def test_unknown_copy_method() -> None:
    with pytest.raises(ValueError, match="unknown copy method"):
        TreeCopier("teleport")
