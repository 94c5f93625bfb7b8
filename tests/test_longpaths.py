"""ShortPaths and open_in_root: entries reached at any depth, paths longer than PATH_MAX included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerstore.archive.inroot import open_in_root
from layerstore.fstree import remove_tree
from layerstore.longpaths import PATH_LIMIT, ShortPaths

DEPTH = 2500  # 5,000-byte relative paths: beyond PATH_MAX


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A directory for a deep tree, removed afterwards (pytest's own clean-up recurses per level)."""
    root = tmp_path / "tree"
    root.mkdir()
    yield root
    remove_tree(root)


def _chain(root: Path, depth: int, name: str = "d") -> str:
    """Make `depth` nested directories `name` below `root` with a file at the bottom; return its relative path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"bottom\n")
    finally:
        os.close(fd)
    return "/".join([name] * depth + ["file"])


def test_short_paths_reach_entries_beyond_path_max(tree: Path) -> None:
    rel = _chain(tree, DEPTH)
    with ShortPaths(tree) as paths:
        assert paths.path("") == str(tree)
        assert paths.path("d") == f"{tree}/d"  # short: as it is
        for depth in (DEPTH, DEPTH // 2, DEPTH):  # down, up, down again
            sub = "/".join(["d"] * depth)
            path = paths.path(sub)
            assert len(os.fsencode(path)) <= PATH_LIMIT
            assert os.path.isdir(path)
        path = paths.path("/" + rel)
        with open(path, "rb") as f:
            assert f.read() == b"bottom\n"
        paths.trim(0)
        assert os.lstat(paths.path(rel)).st_size == len(b"bottom\n")


def test_forget_reopens_a_replaced_directory(tree: Path) -> None:
    rel = _chain(tree, DEPTH)
    parent = rel.rpartition("/")[0]
    with ShortPaths(tree) as paths:
        old = paths.path(rel)
        os.unlink(old)
        os.rmdir(paths.path(parent))
        paths.forget(parent)
        os.mkdir(paths.path(parent))
        paths.forget(parent)
        with open(paths.path(rel), "wb") as f:
            f.write(b"new\n")
        assert os.listdir(paths.path(parent)) == ["file"]


def test_open_in_root_beyond_path_max_follows_links_inside(tree: Path) -> None:
    rel = _chain(tree, DEPTH)
    parts = rel.split("/")
    # A link half-way down pointing back to the root (absolute: the layer root).
    middle = "/".join(parts[: DEPTH // 2])
    with ShortPaths(tree) as paths:
        os.symlink("/", paths.path(f"{middle}/top"))
    root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_in_root(root_fd, rel, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb") as f:
            assert f.read() == b"bottom\n"
        fd = open_in_root(root_fd, f"{middle}/top/{rel}", os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb") as f:
            assert f.read() == b"bottom\n"
        with pytest.raises(FileNotFoundError):
            open_in_root(root_fd, f"{middle}/missing/{'/'.join(parts[DEPTH // 2:])}", os.O_RDONLY)
    finally:
        os.close(root_fd)
