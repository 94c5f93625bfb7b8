"""Frozen copies of a parent's diff/ are removed when no child needs them: disk use stays bounded."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import OpenOverlay, layer_tar

from layerstore import Driver, Graph
from layerstore.testing.trees import deep_directory


def _frozen(home: Path, layer: str) -> list[str]:
    return sorted(n for n in os.listdir(home / layer) if n.startswith("frozen-"))


def test_repeated_child_and_mount_cycles_stay_bounded(open_overlay: OpenOverlay, store_root: Path) -> None:
    home = store_root / "overlay"
    driver = open_overlay(home)
    try:
        graph = Graph(store_root, driver)
        base = graph.create(io.BytesIO(layer_tar({"big": os.urandom(1_000_000)})))
        for cycle in range(6):
            child = graph.create(io.BytesIO(layer_tar({f"c{cycle}": b"x"})), parent=base.id)
            with driver.mounted(base.id):  # mounting the parent writable freezes its diff/ for the child
                pass
            graph.delete(child.id)
            assert len(_frozen(home, base.id)) == 0, cycle  # the last child went: so did its frozen copy
        links = os.listdir(home / "l")
        assert len(links) == 1  # only the base's own short name is left
        graph.delete(base.id)
    finally:
        driver.cleanup()


# -- one frozen state per parent state, shared by every later read ---------------------------------


def _frozen_size(home: Path, layer: str) -> int:
    total = 0
    for name in _frozen(home, layer):
        for dirpath, _, filenames in os.walk(home / layer / name):
            total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return total


def _own_size(home: Path, layer: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(home / layer / "diff"):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return total


def test_reads_of_a_parent_with_children_share_one_frozen_copy(open_overlay: OpenOverlay, store_root: Path) -> None:
    home = store_root / "overlay"
    driver = open_overlay(home)
    try:
        graph = Graph(store_root, driver)
        big = os.urandom(1_000_000)
        base = graph.create(io.BytesIO(layer_tar({"big": big, "small": b"v1"})))
        children = []
        for cycle in range(12):
            children.append(graph.create(io.BytesIO(layer_tar({f"c{cycle}": b"x"})), parent=base.id))
            with graph.tar_layer(base) as stream:  # export
                stream.read()
            with driver.mounted(base.id) as path:  # mount, read only
                assert Path(path, "small").read_bytes() == b"v1"
            assert all(result.ok for result in graph.check()), cycle  # check
            assert len(_frozen(home, base.id)) <= 1, cycle
            assert _frozen_size(home, base.id) <= _own_size(home, base.id), cycle
        assert driver.orphans() == []
        # A real change to the parent: one more frozen state for the children made before it.
        with driver.mounted(base.id) as path:
            Path(path, "small").write_bytes(b"v2")
        later = graph.create(io.BytesIO(layer_tar({"later": b"y"})), parent=base.id)
        with driver.mounted(base.id):  # (the changed layer no longer exports: its digest differs)
            pass
        assert len(_frozen(home, base.id)) == 2
        for child in children:
            with driver.mounted(child.id) as path:
                assert Path(path, "small").read_bytes() == b"v1"
                assert Path(path, "big").read_bytes() == big
        with driver.mounted(later.id) as path:
            assert Path(path, "small").read_bytes() == b"v2"
        # Frozen states go with the last child that stacks on them.
        for child in children:
            graph.delete(child.id)
        assert len(_frozen(home, base.id)) == 1
        graph.delete(later.id)
        assert _frozen(home, base.id) == []
        assert sorted(os.listdir(home / "l")) == [(home / base.id / "link").read_text()]
        assert driver.orphans() == []
    finally:
        driver.cleanup()


def test_a_mounted_parent_of_a_parent_stays_bounded(open_overlay: OpenOverlay, store_root: Path) -> None:
    home = store_root / "overlay"
    driver = open_overlay(home)
    try:
        graph = Graph(store_root, driver)
        base = graph.create(io.BytesIO(layer_tar({"a": b"a"})))
        mid = graph.create(io.BytesIO(layer_tar({"big": os.urandom(300_000)})), parent=base.id)
        for cycle in range(8):
            graph.create(io.BytesIO(layer_tar({f"c{cycle}": b"x"})), parent=mid.id)
            with driver.mounted(mid.id):
                pass
            # The kernel marks an upper directory once, at its first mount: at most one extra copy.
            assert len(_frozen(home, mid.id)) <= 2, cycle
    finally:
        driver.cleanup()


# -- a freeze killed at every step -------------------------------------------------------------

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from layerstore import load_driver
    from layerstore.kit import ScratchEntry
    from layerstore_overlay import links

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def after(function):
        def wrapper(*args, **kwargs):
            function(*args, **kwargs)
            die()
        return wrapper

    home, step, layer = sys.argv[1:]
    if step == "copy":
        links.copy_tree = after(links.copy_tree)
    elif step == "exchange":
        ScratchEntry.exchange = after(ScratchEntry.exchange)
    elif step == "point":
        links.Links.point = die
    elif step == "link":
        links.Links.new_link = die
    elif step == "linkfile":  # the new short name exists, the layer's link file does not say it yet
        write = links.atomic_write
        links.atomic_write = lambda path, *a, **k: die() if str(path).endswith("/link") else write(path, *a, **k)
    elif step == "record":
        links.clock_mark = die
    load_driver("overlay", home).get(layer)
    """
)


def _kill_freeze(home: Path, step: str, layer: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(home), step, layer], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


# A shared freeze copies nothing and records nothing: only its last steps can be cut short.
_STEPS = [(step, False) for step in ("copy", "exchange", "point", "link", "linkfile", "record")]
_STEPS += [(step, True) for step in ("point", "link", "linkfile")]


@pytest.mark.parametrize(("step", "shared"), _STEPS, ids=[f"{s}-{'share' if sh else 'copy'}" for s, sh in _STEPS])
def test_a_freeze_killed_half_way_leaves_nothing_gc_does_not_remove(driver: Driver, step: str, shared: bool) -> None:
    home = driver.home
    driver.create("p", None)
    driver.apply_diff("p", None, io.BytesIO(layer_tar({"f": b"original", "g": os.urandom(100_000)})))
    driver.create("c", "p")
    if shared:
        driver.get("p")  # a first freeze: copied; the parent is unchanged since
        driver.put("p")
        driver.create("c2", "p")
    _kill_freeze(home, step, "p")

    before = driver.orphans()
    removed = driver.gc()
    assert set(before) <= set(removed), (before, removed)
    assert driver.orphans() == []
    assert os.listdir(home / ".staging") == [] and os.listdir(home / ".deleting") == []
    # The children still see the parent as it was, also once it changes.
    with driver.mounted("p") as path:
        Path(path, "f").write_bytes(b"changed")
    for child in ("c", "c2") if shared else ("c",):
        with driver.mounted(child) as path:
            assert Path(path, "f").read_bytes() == b"original", child
    assert driver.orphans() == []
    for child in ("c", "c2") if shared else ("c",):
        driver.remove(child)
    assert _frozen(home, "p") == []
    driver.remove("p")
    assert os.listdir(home / "l") == []
    assert driver.orphans() == []


def test_a_parent_is_copied_not_shared_while_a_child_on_it_is_mounted(driver: Driver) -> None:
    driver.create("p", None)
    driver.apply_diff("p", None, io.BytesIO(layer_tar({"f": b"original"})))
    driver.create("c", "p")
    driver.get("p")  # the first freeze copies; the parent is unchanged since
    driver.put("p")
    driver.create("c2", "p")
    live = driver.get("c2")  # its mount holds the parent's diff/ itself
    try:
        with driver.mounted("p") as path:
            Path(path, "f").write_bytes(b"changed")
        assert Path(live, "f").read_bytes() == b"original"
        assert len(_frozen(driver.home, "p")) == 2
    finally:
        driver.put("c2")
    for child in ("c", "c2"):
        with driver.mounted(child) as path:
            assert Path(path, "f").read_bytes() == b"original"


def test_gc_keeps_a_link_that_a_repair_needs(driver: Driver) -> None:
    driver.create("p", None)
    driver.create("c", "p")
    short = (driver.home / "p" / "link").read_text()
    (driver.home / "p" / "link").unlink()  # damaged records: the link is all that says the short name
    driver.gc()
    assert os.readlink(driver.home / "l" / short) == "../p/diff"
    with driver.mounted("c"):
        pass


def test_a_5000_level_parent_freezes_and_shares(driver: Driver) -> None:
    driver.create("p", None)
    with driver.mounted("p") as path:
        fd = deep_directory(path, 5000)  # far beyond what PATH_MAX can name
        try:
            with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                f.write(b"deep")
        finally:
            os.close(fd)
    for child in ("c1", "c2", "c3"):
        driver.create(child, "p")
        with driver.mounted("p"):  # the first copies the 5,000 levels, the others share that copy
            pass
    assert len(_frozen(driver.home, "p")) == 1
    assert driver.changes("c3", "p") == []
    for child in ("c1", "c2", "c3"):
        driver.remove(child)
    driver.remove("p")
    assert driver.orphans() == []


def test_leftovers_of_the_earlier_layout_are_collected(driver: Driver) -> None:
    driver.create("p", None)
    for leftover in (".trash-0a1b", ".tmp-2c3d", ".new-4e5f", ".probe-6a7b", "p/.diff-copy-8c9d"):
        (driver.home / leftover / "sub").mkdir(parents=True)
    expected = {
        "overlay leftover .trash-0a1b",
        "overlay leftover .tmp-2c3d",
        "overlay leftover .new-4e5f",
        "overlay leftover .probe-6a7b",
        "overlay leftover p/.diff-copy-8c9d",
    }
    assert set(driver.orphans()) == expected
    assert expected <= set(driver.gc())
    assert driver.orphans() == []
    assert driver.exists("p")
