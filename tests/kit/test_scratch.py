"""ScratchArea (staging and trash), atomic_write and option validation of the driver kit."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from layerstore.errors import ConfigError
from layerstore.kit import (
    ScratchArea,
    atomic_write,
    check_options,
    check_storage_options,
    is_atomic_temporary,
    sweep_atomic_temporaries,
)


def test_reserve_and_publish(tmp_path: Path) -> None:
    area = ScratchArea(tmp_path / "staging")
    with area.reserve("layer") as entry:
        assert entry.path.is_dir() and (entry.path.stat().st_mode & 0o777) == 0o700
        assert area.sweep() == [], "a sweep removed an entry its owner holds"
        (entry.path / "f").write_bytes(b"x")
        entry.publish(tmp_path / "layer")
    assert (tmp_path / "layer" / "f").read_bytes() == b"x"
    assert os.listdir(area.directory) == []


def test_unpublished_entry_is_deleted(tmp_path: Path) -> None:
    area = ScratchArea(tmp_path / "staging")
    with pytest.raises(RuntimeError), area.reserve("layer") as entry:
        (entry.path / "sub").mkdir()
        raise RuntimeError("failed half-way")
    assert os.listdir(area.directory) == []


def test_discard_hides_at_once_and_deletes(tmp_path: Path) -> None:
    (tmp_path / "layer" / "sub").mkdir(parents=True)
    area = ScratchArea(tmp_path / "trash")
    area.discard(tmp_path / "layer", "layer")
    assert not (tmp_path / "layer").exists()
    assert os.listdir(area.directory) == []
    with pytest.raises(FileNotFoundError):
        area.discard(tmp_path / "layer", "layer")


def test_sweep_takes_the_owners_lock(tmp_path: Path) -> None:
    area = ScratchArea(tmp_path / "trash")
    area.directory.mkdir()
    for name in ("dead.1", "alive.2"):
        (area.directory / name / "sub").mkdir(parents=True)
        (area.directory / f"{name}.lock").touch()
    (area.directory / "orphan.3").mkdir()  # no lock file at all: garbage
    fd = os.open(area.directory / "alive.2.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert area.unheld() == ["dead.1", "orphan.3"]
        assert sorted(os.listdir(area.directory)) == ["alive.2", "alive.2.lock", "dead.1", "dead.1.lock", "orphan.3"]
        assert area.sweep() == ["dead.1", "orphan.3"]
        assert area.entries() == ["alive.2"]
    finally:
        os.close(fd)
    assert area.sweep() == ["alive.2"]
    assert os.listdir(area.directory) == []


def test_exchange_swaps_in_one_step_and_keeps_or_deletes_the_old(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    (live / "f").write_bytes(b"old")
    area = ScratchArea(tmp_path / "staging")
    with area.reserve("copy") as entry:
        (entry.path / "f").write_bytes(b"new")
        entry.exchange(live)
        assert (live / "f").read_bytes() == b"new"
        assert (entry.path / "f").read_bytes() == b"old"
        entry.publish(tmp_path / "kept")
    assert (tmp_path / "kept" / "f").read_bytes() == b"old"
    with area.reserve("copy") as entry:
        entry.exchange(live)  # not published: the old tree goes with the entry
    assert os.listdir(live) == [] and os.listdir(area.directory) == []
    with pytest.raises(FileNotFoundError), area.reserve("copy") as entry:
        entry.exchange(tmp_path / "missing")


def test_atomic_write_replaces_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("old")
    atomic_write(target, "new", mode=0o600)
    assert target.read_text() == "new"
    atomic_write(target, b"bytes", durable=False)
    assert target.read_bytes() == b"bytes"
    assert os.listdir(tmp_path) == ["file"]
    assert not is_atomic_temporary("file")
    stale = tmp_path / f".file.tmp-{_dead_pid()}-0a1b2c3d"
    live = tmp_path / f".file.tmp-{os.getpid()}-0a1b2c3d"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert sweep_atomic_temporaries(tmp_path) == [stale.name]
    assert sorted(os.listdir(tmp_path)) == sorted(["file", live.name])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_option_messages_have_one_wording() -> None:
    known = {"copy": ("auto", "read"), "pool": None}
    check_options("mine", {"copy": "read", "pool": "anything"}, known)
    with pytest.raises(ConfigError, match=r"^unknown option 'colour' for driver mine; known options: copy, pool$"):
        check_options("mine", {"colour": "blue"}, known)
    with pytest.raises(ConfigError, match=r"^bad value 'fast' for mine option 'copy'; choose one of: auto, read$"):
        check_options("mine", {"copy": "fast"}, known)
    with pytest.raises(ConfigError, match="known options: none"):
        check_options("mine", {"x": "1"}, {})


def test_storage_option_messages() -> None:
    check_storage_options("mine", "L", {"size": "1G"}, ("size",))
    with pytest.raises(ConfigError, match=r"unknown storage option 'inodes' for layer L in driver mine; .*: size$"):
        check_storage_options("mine", "L", {"inodes": "5", "size": "1G"}, ("size",))
    with pytest.raises(ConfigError, match=r"known storage options: none \(it takes no per-layer options\)"):
        check_storage_options("mine", "L", {"size": "1G"}, ())


def test_entries_are_deleted_the_way_the_driver_says(tmp_path: Path) -> None:
    deleted: list[str] = []

    def delete(path: Path) -> None:
        deleted.append(path.name.partition(".")[0])
        os.rmdir(path)

    area = ScratchArea(tmp_path / "trash", delete=delete)
    (tmp_path / "layer").mkdir()
    area.discard(tmp_path / "layer", "layer")
    with pytest.raises(RuntimeError), area.reserve("failed"):
        raise RuntimeError("half-way")
    assert deleted == ["layer", "failed"]
    assert os.listdir(area.directory) == []
