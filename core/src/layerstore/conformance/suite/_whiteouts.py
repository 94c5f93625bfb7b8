"""Whiteouts of files and opaque directories across three layers (docs/driver-guide.md)."""

from __future__ import annotations

import os

from layerstore.drivers import Driver

from ._support import build_layer
from ._tars import TarBuilder, diff_members, hidden_by_diff


def _tree(path: str) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), path))
    return found


_FIRST = {
    "keep", "gone", "dir", "dir/a", "dir/b", "opq", "opq/old1", "opq/sub", "opq/sub/old2", "tree", "tree/x", "tree/x/y",
}  # fmt: skip


class WhiteoutTests:
    """Deleting lower content."""

    def test_whiteouts_across_three_layers(self, driver: Driver) -> None:
        first = build_layer(
            driver,
            tar=TarBuilder()
            .file("keep", b"keep\n")
            .file("gone", b"gone\n")
            .dir("dir")
            .file("dir/a", b"a\n")
            .file("dir/b", b"b\n")
            .dir("opq")
            .file("opq/old1", b"old\n")
            .dir("opq/sub")
            .file("opq/sub/old2", b"old\n")
            .dir("tree")
            .dir("tree/x")
            .file("tree/x/y", b"y\n")
            .bytes(),
        )
        second = build_layer(
            driver,
            first,
            tar=TarBuilder()
            .whiteout("gone")
            .dir("dir")
            .whiteout("dir/a")
            .dir("opq")
            .opaque("opq")
            .file("opq/new", b"new\n")
            .whiteout("tree")
            .bytes(),
        )
        third = build_layer(
            driver,
            second,
            tar=TarBuilder()
            .dir("gone")
            .file("gone/inside", b"a directory now\n")
            .file("opq/newer", b"newer\n")
            .bytes(),
        )
        with driver.mounted(first) as path:
            assert _tree(path) == _FIRST, "applying whiteouts in a child changed the parent"
        with driver.mounted(second) as path:
            assert _tree(path) == {"keep", "dir", "dir/b", "opq", "opq/new"}
        with driver.mounted(third) as path:
            assert _tree(path) == {"keep", "dir", "dir/b", "opq", "opq/new", "opq/newer", "gone", "gone/inside"}
            with open(os.path.join(path, "opq/new"), "rb") as f:
                assert f.read() == b"new\n"

        second_members = diff_members(driver, second, first)
        got = {m.name: m for m in second_members}
        for name in (".wh.gone", "dir/.wh.a", "opq/new", ".wh.tree"):
            assert name in got, f"diff of the second layer lacks {name}: {sorted(got)}"
        unhidden = hidden_by_diff(second_members, "opq", ["old1", "sub"])
        assert not unhidden, f"diff of the second layer neither makes opq opaque nor whites out {unhidden}"
        for name in ("keep", "dir/b", "opq/old1", "opq/sub", "opq/sub/old2", "tree/x", "gone", "dir/a"):
            assert name not in got, f"diff of the second layer has {name}: {sorted(got)}"
        assert [str(c) for c in driver.changes(second, first)] == [
            "C /dir", "D /dir/a", "D /gone", "C /opq", "A /opq/new", "D /opq/old1", "D /opq/sub", "D /tree",
        ]  # fmt: skip

        third_members = diff_members(driver, third, second)
        assert not [m.name for m in third_members if ".wh." in m.name], "a layer that only adds has whiteouts"
        assert {"gone", "gone/inside", "opq/newer"} <= {m.name for m in third_members}
        assert [str(c) for c in driver.changes(third, second)] == [
            "A /gone",
            "A /gone/inside",
            "C /opq",
            "A /opq/newer",
        ]

    def test_whiteout_files_are_never_visible(self, driver: Driver) -> None:
        first = build_layer(driver, tar=TarBuilder().dir("d").file("d/x", b"x").file("y", b"y").bytes())
        second = build_layer(driver, first, tar=TarBuilder().whiteout("d/x").whiteout("y").opaque("d").bytes())
        with driver.mounted(second) as path:
            assert _tree(path) == {"d"}
            assert os.listdir(os.path.join(path, "d")) == []
