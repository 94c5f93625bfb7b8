"""`remove_tree`: any depth, never follows symlinks, copes with unreadable directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerstore.fstree import remove_tree, remove_tree_quietly


def test_deep_tree_without_recursion(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # 6,000-byte paths: beyond PATH_MAX and the recursion limit
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    os.close(fd)
    remove_tree(top)
    assert not top.exists()


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "link").symlink_to(outside)
    (top / "dirlink").symlink_to(outside, target_is_directory=True)
    remove_tree(top)
    assert (outside / "keep").read_text() == "x"
    assert not top.exists()


def test_mode_zero_directories(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "locked" / "inner").mkdir(parents=True)
    (top / "locked" / "inner" / "f").write_text("x")
    (top / "locked" / "inner").chmod(0)
    (top / "locked").chmod(0)
    remove_tree(top)
    assert not top.exists()


def test_missing_and_quiet(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "missing", missing_ok=False)
    warnings: list[str] = []
    assert remove_tree_quietly(tmp_path / "missing", warnings.append)
    assert warnings == []
