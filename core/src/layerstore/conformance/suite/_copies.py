"""A child starts as an exact copy of its parent, and the two stay independent (DESIGN §8.1)."""

from __future__ import annotations

import os
import shutil

import pytest

from layerstore.drivers import Driver

from ._support import build_layer, describe_difference, is_root, new_id, populate_every_kind, set_xattr, snapshot

_NEEDS_ROOT = "needs root: the tree has device nodes, foreign owners and trusted.* xattrs"


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


class CopyTests:
    """Snapshots of a parent."""

    def test_child_is_exact_copy_of_parent(self, driver: Driver) -> None:
        if not is_root():
            pytest.skip(_NEEDS_ROOT)
        parent = build_layer(driver, fill=populate_every_kind)
        with driver.mounted(parent) as path:
            expected = snapshot(path)
        assert expected["hard-a"].links == ("hard-a", "hard-b", "sub/hard-c"), "the test tree lost its hardlinks"
        child = new_id()
        driver.create(child, parent)
        with driver.mounted(child) as path:
            got = snapshot(path)
        assert got == expected, "the child is not a copy of its parent:\n" + describe_difference(expected, got)

    def test_child_changes_do_not_show_in_parent(self, driver: Driver) -> None:
        if not is_root():
            pytest.skip(_NEEDS_ROOT)
        parent = build_layer(driver, fill=populate_every_kind)
        with driver.mounted(parent) as path:
            before = snapshot(path)
        child = new_id()
        driver.create(child, parent)
        with driver.mounted(child) as path:
            _modify_everything(path)
            changed = snapshot(path)
        assert changed != before
        with driver.mounted(parent) as path:
            after = snapshot(path)
        assert after == before, "changes to the child show in the parent:\n" + describe_difference(before, after)

    def test_parent_changes_do_not_show_in_child(self, driver: Driver) -> None:
        if not is_root():
            pytest.skip(_NEEDS_ROOT)
        parent = build_layer(driver, fill=populate_every_kind)
        child = new_id()
        driver.create(child, parent)
        with driver.mounted(child) as path:
            before = snapshot(path)
        with driver.mounted(parent) as path:
            _modify_everything(path)
        with driver.mounted(child) as path:
            after = snapshot(path)
        assert after == before, "changes to the parent show in the child:\n" + describe_difference(before, after)

    def test_grandchild_is_copy_of_changed_child(self, driver: Driver) -> None:
        if not is_root():
            pytest.skip(_NEEDS_ROOT)
        parent = build_layer(driver, fill=populate_every_kind)
        child = new_id()
        driver.create(child, parent)
        with driver.mounted(child) as path:
            _modify_everything(path)
            expected = snapshot(path)
        grandchild = new_id()
        driver.create(grandchild, child)
        with driver.mounted(grandchild) as path:
            got = snapshot(path)
        assert got == expected, "the grandchild is not a copy of the child:\n" + describe_difference(expected, got)
