"""The kit's layer-ID rule and its driver-wide lock."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerstore.errors import InvalidID, LayerStoreError
from layerstore.kit import check_layer_id, held_lock, is_valid_layer_id


@pytest.mark.parametrize("layer_id", ["a" * 64, "rw-layer", "x.y", "l"])
def test_valid_layer_ids(layer_id: str) -> None:
    assert is_valid_layer_id(layer_id)
    check_layer_id("mine", layer_id)


@pytest.mark.parametrize("layer_id", ["", ".", "..", ".hidden", "a/b", "/abs", "nul\0"])
def test_invalid_layer_ids_have_one_wording(layer_id: str) -> None:
    assert not is_valid_layer_id(layer_id)
    with pytest.raises(InvalidID) as err:
        check_layer_id("mine", layer_id)
    assert str(err.value) == (
        f"invalid layer ID {layer_id!r} for driver mine: "
        "a layer ID must be non-empty, without '/' or NUL, and not start with '.'"
    )
    assert isinstance(err.value, LayerStoreError)


def test_a_driver_reserves_names() -> None:
    assert not is_valid_layer_id("l", ("l",))
    with pytest.raises(InvalidID, match=r"^invalid layer ID 'l' for driver overlay: 'l' is reserved$"):
        check_layer_id("overlay", "l", ("l",))


def _held_elsewhere(path: Path) -> bool:
    """Whether another process finds the lock taken (exclusive, without waiting)."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], check=False).returncode == 1


def test_held_lock_is_held_for_the_block_and_released_after(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with held_lock(lock):
        assert (lock.stat().st_mode & 0o777) == 0o600
        assert _held_elsewhere(lock)
    assert not _held_elsewhere(lock)
    with held_lock(lock, shared=True):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared holders coexist
        finally:
            os.close(fd)
        assert _held_elsewhere(lock)
    assert lock.exists(), "the lock file is the lock's name: it stays"
