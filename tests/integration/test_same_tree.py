"""The same chain of layer tars gives the same mounted tree on vfs, overlay, btrfs and zfs.

The tars exercise the tar semantics every driver shares: parents resolved
through links of lower layers (relative and absolute), hardlinks and
whiteouts through them, opaque directories, an opaque root.  The trees are
compared file by file: type, mode, owner, size, content, link target,
hardlink identity, xattrs (directory times differ legitimately: a directory
a layer writes into gets the time of the import).
"""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from layerstore import Driver
from layerstore.conformance.suite._support import snapshot
from layerstore.conformance.suite._tars import TarBuilder
from layerstore.testing.loop import loop_filesystem_or_unavailable
from layerstore.testing.zfsfuse import zfs_fuse_pool

from .test_cross_driver import _open

pytestmark = pytest.mark.integration

DRIVERS = ("vfs", "overlay", "btrfs", "zfs")


def _chain() -> list[bytes]:
    base = (
        TarBuilder()
        .dir("usr")
        .dir("usr/lib")
        .file("usr/lib/libc.so", b"libc\n", mode=0o755)
        .file("usr/lib/old", b"old\n")
        .dir("usr/share", mode=0o750, uid=3, gid=4)
        .file("usr/share/doc", b"doc\n")
        .symlink("lib", "usr/lib")
        .symlink("share", "/usr/share")
        .dir("etc")
        .file("etc/passwd", b"root\n")
        .dir("var")
        .file("var/log", b"log\n", xattrs={"user.note": b"kept"})
        .bytes()
    )
    child = (
        TarBuilder()
        .file("lib/systemd/system/app.service", b"[Unit]\n")
        .hardlink("libc-hard", "lib/libc.so")
        .whiteout("lib/old")
        .opaque("share")
        .file("share/new", b"new\n")
        .file("etc/hostname", b"box\n")
        .bytes()
    )
    top = TarBuilder().opaque(".").dir("etc").file("etc/hostname", b"top\n").symlink("lib", "usr/lib").bytes()
    return [base, child, top]


@contextlib.contextmanager
def _home(name: str, workdir: Path) -> Iterator[Path]:
    if name == "btrfs":
        with loop_filesystem_or_unavailable("btrfs", workdir, "btrfs", 256) as mnt:
            yield mnt / "home"
    elif name == "zfs":
        with zfs_fuse_pool(workdir, 128) as (_pool, mnt):
            yield mnt / "home"
    else:
        yield workdir / "home"


def _trees(name: str, workdir: Path) -> list[dict[str, object]]:
    """The mounted tree of every layer of the chain, described (directory times left out)."""
    trees = []
    with _home(name, workdir) as home:
        driver = _open(name, home)
        layers: list[str] = []
        try:
            parent = None
            for tar in _chain():
                layer = secrets.token_hex(32)
                driver.create(layer, parent)
                layers.append(layer)
                driver.apply_diff(layer, parent, io.BytesIO(tar))
                with driver.mounted(layer) as path:
                    nodes = snapshot(path)
                trees.append({rel: (n if n.kind != "dir" else _without_time(n)) for rel, n in nodes.items()})
                parent = layer
        finally:
            for layer in reversed(layers):
                if driver.exists(layer):
                    driver.remove(layer, force=True)
            driver.cleanup()
    return trees


def _without_time(node: object) -> object:
    return attrs.evolve(node, mtime_ns=None)


@pytest.fixture(scope="module")
def vfs_trees(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    return _trees("vfs", tmp_path_factory.mktemp("vfs"))


def test_vfs_tree_follows_the_rule(vfs_trees: list[dict[str, object]]) -> None:
    child = vfs_trees[1]
    assert child["lib"].target == "usr/lib"  # type: ignore[attr-defined]
    assert "usr/lib/systemd/system/app.service" in child
    assert "usr/lib/old" not in child
    assert sorted(k for k in child if k.startswith("usr/share/")) == ["usr/share/new"]
    assert sorted(k for k in vfs_trees[2] if "/" not in k and k != ".") == ["etc", "lib"]


@pytest.mark.parametrize("name", DRIVERS[1:])
def test_same_tree_as_vfs(name: str, vfs_trees: list[dict[str, object]], tmp_path: Path) -> None:
    for depth, (want, got) in enumerate(zip(vfs_trees, _trees(name, tmp_path), strict=True)):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        assert not missing and not extra, f"{name}, layer {depth}: missing {missing}, extra {extra}"
        differ = [rel for rel in want if want[rel] != got[rel]]
        assert not differ, f"{name}, layer {depth}: " + "; ".join(f"{r}: {want[r]} != {got[r]}" for r in differ)


def test_overlay_diffs_rebuild_the_chain_on_vfs(vfs_trees: list[dict[str, object]], tmp_path: Path) -> None:
    """overlay's native diffs of the chain (an opaque root becomes whiteouts) give vfs the same trees."""
    overlay = _open("overlay", tmp_path / "overlay")
    vfs = _open("vfs", tmp_path / "vfs")
    made: list[tuple[Driver, str]] = []
    try:
        parent = None
        for tar in _chain():
            layer = secrets.token_hex(32)
            overlay.create(layer, parent)
            made.append((overlay, layer))
            overlay.apply_diff(layer, parent, io.BytesIO(tar))
            parent = layer
        vfs_parent = None
        for depth, (_, layer) in enumerate(list(made)):
            with overlay.diff(layer, None if depth == 0 else made[depth - 1][1]) as stream:
                diff = stream.read()
            copy = secrets.token_hex(32)
            vfs.create(copy, vfs_parent)
            made.append((vfs, copy))
            vfs.apply_diff(copy, vfs_parent, io.BytesIO(diff))
            with vfs.mounted(copy) as path:
                got = {rel: (n if n.kind != "dir" else _without_time(n)) for rel, n in snapshot(path).items()}
            assert got == vfs_trees[depth], f"layer {depth}: the overlay diff rebuilt a different tree"
            vfs_parent = copy
    finally:
        for driver, layer in reversed(made):
            if driver.exists(layer):
                driver.remove(layer, force=True)
        overlay.cleanup()
        vfs.cleanup()
