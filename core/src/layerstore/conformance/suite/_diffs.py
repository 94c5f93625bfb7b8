"""diff, apply_diff, changes and diff_size, checked with tarfile and os.lstat (docs/driver-guide.md)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile

import pytest

from layerstore.drivers import Driver

from ._support import CAPABILITY, MTIME, Mode, build_layer, describe_difference, new_id, snapshot
from ._tars import Member, TarBuilder, diff_members, hidden_by_diff, read_tar


def every_kind_tar() -> TarBuilder:
    """A base layer tar with every member type and attribute a layer tar carries (needs root to apply)."""
    return (
        TarBuilder()
        .dir("bin", mode=0o755)
        .file("bin/tool", b"\x7fELF" + bytes(3000), mode=0o4755, xattrs={"security.capability": CAPABILITY})
        .file("bin/group-tool", b"sgid\n", mode=0o2711, gid=50)
        .hardlink("bin/tool-again", "bin/tool")
        .symlink("bin/sh", "tool")
        .symlink("bin/abs", "/bin/tool", uid=12, gid=13)
        .dir("tmp", mode=0o1777)
        .dir("home", mode=0o755)
        .dir("home/user", mode=0o700, uid=1000, gid=1000)
        .file("home/user/notes", b"mine\n", mode=0o600, uid=1000, gid=1000, mtime=MTIME + 5)
        .file(
            "home/user/tagged",
            b"with attributes\n",
            xattrs={"user.tag": b"blue", "trusted.secret": b"only root sees this"},
        )
        .file("empty", b"", mode=0o444)
        .dir("dev", mode=0o755)
        .device("dev/null", "chr", 1, 3, mode=0o666)
        .device("dev/loop200", "blk", 7, 200, mode=0o660)
        .fifo("dev/pipe", mode=0o620)
    )


def _child_changes(root: str) -> None:
    """What `test_diff_of_child_layer` and friends do to a child of `_parent_tar()`."""

    def p(rel: str) -> str:
        return os.path.join(root, rel)

    with open(p("a/mod"), "wb") as f:
        f.write(b"modified contents\n")
    os.utime(p("a/mod"), (MTIME + 100, MTIME + 100))
    os.unlink(p("a/gone"))
    shutil.rmtree(p("d"))
    os.mkdir(p("newdir"))
    os.chmod(p("newdir"), 0o755)
    with open(p("newdir/newfile"), "wb") as f:
        f.write(b"brand new\n")
    shutil.rmtree(p("opq"))
    os.mkdir(p("opq"))
    os.chmod(p("opq"), 0o755)
    with open(p("opq/new"), "wb") as f:
        f.write(b"replaces the old contents\n")
    shutil.rmtree(p("emptydir"))
    os.mkdir(p("emptydir"))
    os.chmod(p("emptydir"), 0o755)
    with open(p("emptydir/n"), "wb") as f:
        f.write(b"n\n")
    os.chmod(p("perm"), 0o600)


def _parent_tar() -> TarBuilder:
    return (
        TarBuilder()
        .dir("a")
        .file("a/keep", b"unchanged\n")
        .file("a/mod", b"original\n")
        .file("a/gone", b"to be deleted\n")
        .dir("d")
        .dir("d/x")
        .file("d/x/y", b"deleted with its directory\n")
        .dir("opq")
        .file("opq/old", b"hidden by an opaque directory\n")
        .dir("emptydir")
        .file("perm", b"mode changes\n", mode=0o644)
    )


_CHILD_CHANGES = [
    "C /a",
    "D /a/gone",
    "C /a/mod",
    "D /d",
    "C /emptydir",
    "A /emptydir/n",
    "A /newdir",
    "A /newdir/newfile",
    "C /opq",
    "A /opq/new",
    "D /opq/old",
    "C /perm",
]


def _by_name(members: list[Member]) -> dict[str, Member]:
    seen: dict[str, Member] = {}
    for m in members:
        assert m.name not in seen, f"diff has two members named {m.name}"
        seen[m.name] = m
    return seen


def _check_member_names(members: list[Member]) -> None:
    for m in members:
        assert m.name not in ("", ".", "./", "/"), "diff has an entry for the layer root"
        assert not m.name.startswith(("/", "./")), f"diff member name {m.name!r} is not relative"
        assert ".." not in m.name.split("/"), f"diff member name {m.name!r} climbs out"
    position = {m.name.rstrip("/"): i for i, m in enumerate(members)}
    for m in members:
        head = m.name.rstrip("/").rpartition("/")[0]
        if head in position:
            assert position[head] < position[m.name.rstrip("/")], f"{m.name} comes before its directory {head}"


class DiffTests:
    """Layer tars out and in."""

    @pytest.mark.layerstore_requires("root")
    def test_diff_of_base_layer_reproduces_its_tar(self, driver: Driver) -> None:
        tar = every_kind_tar()
        data = tar.bytes()
        layer = new_id()
        driver.create(layer)
        assert driver.apply_diff(layer, None, io.BytesIO(data)) == tar.regular_bytes
        expected = _by_name(_read(data))
        got = _by_name(diff_members(driver, layer, None))
        _check_member_names(list(got.values()))
        assert sorted(got) == sorted(expected)
        # Which name of a hardlinked pair carries the data is the exporter's choice.
        pair = {"bin/tool", "bin/tool-again"}
        carriers = [n for n in pair if got[n].kind == "file"]
        assert len(carriers) == 1, f"hardlinks exported as {[got[n].kind for n in sorted(pair)]}"
        (linked,) = pair - set(carriers)
        assert got[linked].kind == "hardlink" and got[linked].linkname == carriers[0]
        for name, want in expected.items():
            if name in pair:
                want, have = expected["bin/tool"], got[carriers[0]]
            else:
                have = got[name]
            for field in ("kind", "mode", "uid", "gid", "mtime", "digest", "linkname", "rdev", "xattrs"):
                assert getattr(have, field) == getattr(want, field), (
                    f"{name}: {field} {getattr(have, field)!r} != {getattr(want, field)!r}"
                )
        assert driver.diff_size(layer, None) == tar.regular_bytes

    def test_diff_of_child_layer(self, driver: Driver) -> None:
        parent = build_layer(driver, tar=_parent_tar().bytes())
        child = build_layer(driver, parent, fill=_child_changes)
        members = diff_members(driver, child, parent)
        _check_member_names(members)
        got = _by_name(members)
        for whiteout in ("a/.wh.gone", ".wh.d"):
            assert whiteout in got, f"diff lacks the whiteout {whiteout}: {sorted(got)}"
            assert got[whiteout].kind == "file" and got[whiteout].size == 0
        assert not hidden_by_diff(members, "opq", ["old"]), "diff neither makes opq opaque nor whites out opq/old"
        for name in ("a", "a/mod", "newdir", "newdir/newfile", "opq", "opq/new", "emptydir", "emptydir/n", "perm"):
            assert name in got, f"diff lacks {name}: {sorted(got)}"
        for name in ("a/keep", "opq/old", "d/x", "d/x/y", "emptydir/.wh..wh..opq", "a/gone", "d"):
            assert name not in got, f"diff has {name}, which is unchanged, deleted or not hiding anything"
        assert got["a/mod"].size == len(b"modified contents\n")
        assert got["perm"].mode == Mode(0o600)
        assert {(m.kind, m.size) for m in members if ".wh." in m.name} == {("file", 0)}

    def test_changes(self, driver: Driver) -> None:
        parent = build_layer(driver, tar=_parent_tar().bytes())
        child = build_layer(driver, parent, fill=_child_changes)
        assert [str(c) for c in driver.changes(child, parent)] == _CHILD_CHANGES
        assert [str(c) for c in driver.changes(parent, None)] == sorted(
            [
                "A /a", "A /a/gone", "A /a/keep", "A /a/mod", "A /d", "A /d/x", "A /d/x/y",
                "A /emptydir", "A /opq", "A /opq/old", "A /perm",
            ],
            key=lambda s: s[2:],
        )  # fmt: skip

    def test_deleted_and_created_again_is_add(self, driver: Driver) -> None:
        first = build_layer(driver, tar=TarBuilder().file("p", b"first\n").dir("q").file("q/inner", b"x").bytes())
        second = build_layer(driver, first, tar=TarBuilder().whiteout("p").whiteout("q").bytes())
        third = build_layer(driver, second, tar=TarBuilder().file("p", b"again\n").file("q", b"now a file").bytes())
        assert [str(c) for c in driver.changes(second, first)] == ["D /p", "D /q"]
        assert [str(c) for c in driver.changes(third, second)] == ["A /p", "A /q"]

    def test_apply_diff_returns_diff_size(self, driver: Driver) -> None:
        base_tar = _parent_tar().file("big", os.urandom(70_000))
        parent = new_id()
        driver.create(parent)
        assert driver.apply_diff(parent, None, io.BytesIO(base_tar.bytes())) == base_tar.regular_bytes
        assert driver.diff_size(parent, None) == base_tar.regular_bytes
        child_tar = (
            TarBuilder()
            .dir("a", mtime=MTIME + 1)
            .file("a/mod", b"a longer replacement of the original\n", mtime=MTIME + 1)
            .whiteout("a/gone")
            .file("added", os.urandom(12_345), mtime=MTIME + 1)
        )
        child = new_id()
        driver.create(child, parent)
        returned = driver.apply_diff(child, parent, io.BytesIO(child_tar.bytes()))
        assert returned == child_tar.regular_bytes
        assert driver.diff_size(child, parent) == returned

    @pytest.mark.layerstore_requires("root")
    def test_diff_applies_with_plain_archive_code(self, driver: Driver) -> None:
        """An independent extractor (layerstore.archive, not the driver) rebuilds the driver's tree from its diffs."""
        from layerstore.archive.apply import apply_tar

        parent = build_layer(driver, tar=every_kind_tar().dir("a").file("a/gone", b"x").file("a/mod", b"y").bytes())
        child = build_layer(driver, parent, tar=_parent_tar().bytes(), fill=_child_changes)
        with tempfile.TemporaryDirectory(prefix="layerstore-oracle-") as oracle:
            for layer, base in ((parent, None), (child, parent)):
                with driver.diff(layer, base) as stream:
                    apply_tar(stream, oracle, id_maps=driver.id_maps)
            rebuilt = snapshot(oracle, mtime_precision=10**9)
            del rebuilt["."]
            with driver.mounted(child) as path:
                expected = snapshot(path, mtime_precision=10**9)
            del expected["."]
        assert rebuilt == expected, "the diffs do not rebuild the layer:\n" + describe_difference(expected, rebuilt)

    def test_diff_applies_to_a_new_layer(self, driver: Driver) -> None:
        parent = build_layer(driver, tar=_parent_tar().bytes())
        child = build_layer(driver, parent, fill=_child_changes)
        copy = new_id()
        driver.create(copy, parent)
        with driver.diff(child, parent) as stream:
            driver.apply_diff(copy, parent, stream)
        with driver.mounted(child) as a, driver.mounted(copy) as b:
            expected, got = snapshot(a, mtime_precision=10**9), snapshot(b, mtime_precision=10**9)
        assert got == expected, "applying a layer's diff does not reproduce it:\n" + describe_difference(expected, got)
        assert [str(c) for c in driver.changes(copy, parent)] == _CHILD_CHANGES


def _read(data: bytes) -> list[Member]:
    return read_tar(io.BytesIO(data))
