"""A child starts as an exact copy of its parent, and the two stay independent (docs/driver-guide.md)."""

from __future__ import annotations

import os
import shutil

import pytest

from layerstore.drivers import Driver

from ._support import Node, build_layer, describe_difference, new_id, populate_every_kind, set_xattr, snapshot


def _modify_everything(root: str) -> None:
    """Change one thing of each kind in a tree made by `populate_every_kind`."""

    def p(rel: str) -> str:
        return os.path.join(root, rel)

    with open(p("plain"), "ab") as f:
        f.write(b"appended\n")
    with open(p("hard-b"), "r+b") as g:  # a hardlinked name: its inode must not be shared with the other layer
        g.write(b"ONE")
    os.chmod(p("exec"), 0o700)
    os.chown(p("owned"), 1, 1)
    os.chmod(p("setuid"), 0o755)
    shutil.rmtree(p("sub/deeper"))
    os.unlink(p("link-rel"))
    os.symlink("exec", p("link-rel"))
    os.rename(p("sticky/tmpfile"), p("moved"))
    os.unlink(p("fifo"))
    with open(p("new-file"), "wb") as f:
        f.write(b"new\n")
    set_xattr(p("plain"), "user.note", b"changed")
    os.removexattr(p("exec"), "security.capability")
    os.utime(p("big"), ns=(1, 2))
    os.chmod(root, 0o700)


def _full_parent(driver: Driver) -> str:
    """A layer holding one of every kind of file (the tests that use it require root)."""
    return build_layer(driver, fill=populate_every_kind)


def _child_of(driver: Driver, parent: str) -> str:
    """Create a new layer on `parent` and return its ID."""
    child = new_id()
    driver.create(child, parent)
    return child


def _tree(driver: Driver, layer: str) -> dict[str, Node]:
    """`snapshot` of `layer`'s mounted view."""
    with driver.mounted(layer) as path:
        return snapshot(path)


class CopyTests:
    """Snapshots of a parent."""

    @pytest.mark.layerstore_requires("root")
    def test_child_is_exact_copy_of_parent(self, driver: Driver) -> None:
        parent = _full_parent(driver)
        expected = _tree(driver, parent)
        assert expected["hard-a"].links == ("hard-a", "hard-b", "sub/hard-c"), "the test tree lost its hardlinks"
        got = _tree(driver, _child_of(driver, parent))
        assert got == expected, "the child is not a copy of its parent:\n" + describe_difference(expected, got)

    @pytest.mark.layerstore_requires("root")
    def test_child_changes_do_not_show_in_parent(self, driver: Driver) -> None:
        parent = _full_parent(driver)
        before = _tree(driver, parent)
        child = _child_of(driver, parent)
        with driver.mounted(child) as path:
            _modify_everything(path)
            changed = snapshot(path)
        assert changed != before
        after = _tree(driver, parent)
        assert after == before, "changes to the child show in the parent:\n" + describe_difference(before, after)

    @pytest.mark.layerstore_requires("root")
    def test_parent_changes_do_not_show_in_child(self, driver: Driver) -> None:
        parent = _full_parent(driver)
        child = _child_of(driver, parent)
        before = _tree(driver, child)
        with driver.mounted(parent) as path:
            _modify_everything(path)
        after = _tree(driver, child)
        assert after == before, "changes to the parent show in the child:\n" + describe_difference(before, after)

    @pytest.mark.layerstore_requires("root")
    def test_grandchild_is_copy_of_changed_child(self, driver: Driver) -> None:
        child = _child_of(driver, _full_parent(driver))
        with driver.mounted(child) as path:
            _modify_everything(path)
            expected = snapshot(path)
        got = _tree(driver, _child_of(driver, child))
        assert got == expected, "the grandchild is not a copy of the child:\n" + describe_difference(expected, got)
