"""copy_tree: every file type and attribute, hardlinks, data copy methods, trees deeper than PATH_MAX."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from layerstore.conformance.suite._support import describe_difference, populate_every_kind, snapshot
from layerstore.kit import COPY_METHODS, TreeCopier, copy_tree, probe_reflink, remove_tree
from layerstore.testing.trees import deep_directory

DEPTH = 5000


def _deep(root: Path, depth: int) -> list[str]:
    """A chain of `depth` directories named "d" below `root`, a file and a hardlink at the bottom."""
    fd = deep_directory(root, depth)
    try:
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd), "wb") as f:
            f.write(b"at the bottom\n")
        os.link("leaf", "leaf-link", src_dir_fd=fd, dst_dir_fd=fd)
        os.symlink("leaf", "leaf-symlink", dir_fd=fd)
    finally:
        os.close(fd)
    return ["d"] * depth


def _bottom_stat(root: Path, parts: list[str], name: str) -> os.stat_result:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="devices, foreign owners and trusted.* xattrs need root")
def test_copy_keeps_every_kind_and_attribute(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    populate_every_kind(str(src))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    os.utime(src / "sock", ns=(1, 1_600_000_000_123_456_789), follow_symlinks=False)
    copy_tree(src, dst)
    expected, got = snapshot(src), snapshot(dst)
    assert got == expected, describe_difference(expected, got)
    assert stat.S_IMODE(os.lstat(dst).st_mode) == 0o750
    assert os.lstat(dst / "hard-a").st_ino == os.lstat(dst / "sub/hard-c").st_ino
    assert os.lstat(dst / "hard-a").st_ino != os.lstat(src / "hard-a").st_ino


def test_tree_deeper_than_path_max(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    parts = _deep(src, DEPTH)
    copy_tree(src, dst)
    leaf, link = _bottom_stat(dst, parts, "leaf"), _bottom_stat(dst, parts, "leaf-link")
    assert stat.S_ISREG(leaf.st_mode) and leaf.st_size == len(b"at the bottom\n")
    assert (leaf.st_ino, leaf.st_nlink) == (link.st_ino, 2), "the hardlink at depth 5000 was not kept"
    assert stat.S_ISLNK(_bottom_stat(dst, parts, "leaf-symlink").st_mode)
    remove_tree(dst)
    remove_tree(src)
    assert os.listdir(tmp_path) == []


def test_remove_tree_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    os.symlink(outside, tree / "sub" / "link")
    remove_tree(tree)
    assert not tree.exists() and (outside / "keep").read_bytes() == b"keep"
    remove_tree(tree)  # missing is fine
    with pytest.raises(FileNotFoundError):
        remove_tree(tree, missing_ok=False)


def _data_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "small").write_bytes(b"small")
    (src / "empty").write_bytes(b"")
    os.mkfifo(src / "fifo")
    return src


@pytest.mark.parametrize("method", COPY_METHODS)
def test_every_copy_method_copies_data(tmp_path: Path, method: str) -> None:
    src = _data_tree(tmp_path)
    dst = tmp_path / "dst"
    dst.mkdir()
    copier = TreeCopier(method)
    copier.copy_tree(str(src), str(dst))
    for name in ("big", "small", "empty"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    if method != "reflink" or probe_reflink(tmp_path):
        assert copier.method == method
    else:
        assert copier.method == "copy_file_range", "an unsupported reflink was not demoted once"


def test_unknown_copy_method() -> None:
    with pytest.raises(ValueError, match="unknown copy method"):
        TreeCopier("teleport")
