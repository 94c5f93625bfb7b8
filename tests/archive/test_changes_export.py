"""tree_changes rules (docs/driver-guide.md), export_changes read back by tarfile, export -> apply round trips."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from archive_helpers import NS, T0, build_sample_tree, snapshot

from layerstore.archive.apply import apply_tar
from layerstore.archive.changes import changes_size, tree_changes
from layerstore.archive.export import export_changes
from layerstore.change import Change, ChangeKind
from layerstore.idtools import IDMap, IDMappings


def _strs(changes: list[Change]) -> list[str]:
    return [str(c) for c in changes]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    parent = build_sample_tree(tmp_path / "parent")
    child = tmp_path / "child"
    subprocess.run(["cp", "-a", str(parent), str(child)], check=True)
    return child, parent


def test_identical_copy_has_no_changes(pair: tuple[Path, Path]) -> None:
    assert tree_changes(*pair) == []


def test_no_parent_lists_everything_as_added(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/f").write_text("x")
    (root / "z").write_text("z")
    assert _strs(tree_changes(root, None)) == ["A /a", "A /a/b", "A /a/b/f", "A /z"]


def test_rules(pair: tuple[Path, Path]) -> None:
    child, _ = pair
    (child / "etc/new").write_text("new")  # add inside an unchanged dir
    os.utime(child / "etc", ns=(T0 + 3, T0 + 3))
    shutil.rmtree(child / "usr")  # a removed subtree is one Delete
    os.chmod(child / "bin/su", 0o755)  # setuid bit dropped
    os.chown(child / "bin/sg", 0, 43)
    os.remove(child / "lib")
    os.symlink("usr/lib64", child / "lib")  # same size as before? no: target differs
    os.utime(child / "lib", ns=(T0, T0), follow_symlinks=False)
    os.removexattr(child / "bin/ping", "security.capability")
    os.unlink(child / "dev/null")
    os.mknod(child / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.utime(child / "dev/null", ns=(T0, T0))
    os.utime(child / "dev", ns=(T0 + 3, T0 + 3))
    (child / "tmp").rmdir()
    (child / "tmp").write_text("now a file")
    os.utime(child / "tmp", ns=(T0, T0))
    got = _strs(tree_changes(*pair))
    assert got == [
        "C /bin",
        "C /bin/ping",
        "C /bin/sg",
        "C /bin/su",
        "C /dev",
        "C /dev/null",
        "C /etc",
        "A /etc/new",
        "C /lib",
        "C /tmp",
        "D /usr",
    ]


def test_symlink_target_with_same_length_is_a_modify(pair: tuple[Path, Path]) -> None:
    child, _ = pair
    os.remove(child / "lib")
    os.symlink("usr/LIB", child / "lib")
    os.utime(child / "lib", ns=(T0 + len("lib"), T0 + len("lib")), follow_symlinks=False)
    st_parent = os.lstat(pair[1] / "lib")
    os.utime(child / "lib", ns=(st_parent.st_atime_ns, st_parent.st_mtime_ns), follow_symlinks=False)
    os.utime(child, ns=(os.lstat(pair[1]).st_atime_ns, os.lstat(pair[1]).st_mtime_ns))
    assert _strs(tree_changes(*pair)) == ["C /lib"]


def test_mtime_whole_second_rule(pair: tuple[Path, Path]) -> None:
    child, parent = pair
    f = "etc/passwd"  # parent mtime T0 + 0.123456789 s
    os.utime(child / f, ns=(T0, T0))  # whole seconds on one side: same second, not a change
    os.utime(child / "etc/passwd.hl", ns=(T0, T0))
    assert tree_changes(child, parent) == []
    os.utime(child / f, ns=(T0 + 5, T0 + 5))  # both sub-second and different: a change
    assert _strs(tree_changes(child, parent)) == ["C /etc", "C /etc/passwd", "C /etc/passwd.hl"]
    os.utime(child / f, ns=(T0 + NS, T0 + NS))  # another second
    assert _strs(tree_changes(child, parent)) == ["C /etc", "C /etc/passwd", "C /etc/passwd.hl"]


def test_capability_change_alone_is_a_modify(pair: tuple[Path, Path]) -> None:
    child, parent = pair
    os.setxattr(child / "bin/ping", "security.capability", bytes.fromhex("0100000200100000000000000000000000000000"))
    assert _strs(tree_changes(child, parent)) == ["C /bin", "C /bin/ping"]


def test_delete_then_recreate_directory(pair: tuple[Path, Path], tmp_path: Path) -> None:
    child, parent = pair
    st = os.lstat(parent / "usr/lib")
    shutil.rmtree(child / "usr/lib")
    (child / "usr/lib").mkdir()
    (child / "usr/lib/fresh").write_text("fresh")
    os.utime(child / "usr/lib", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(child / "usr", ns=(os.lstat(parent / "usr").st_atime_ns, os.lstat(parent / "usr").st_mtime_ns))
    changes = tree_changes(child, parent)
    assert _strs(changes) == ["C /usr", "C /usr/lib", "D /usr/lib/big.bin", "D /usr/lib/empty", "A /usr/lib/fresh"]
    with export_changes(child, changes) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        names = [(m.name, m.type) for m in tar]
    assert names == [
        ("usr", tarfile.DIRTYPE),
        ("usr/lib", tarfile.DIRTYPE),
        ("usr/lib/.wh.big.bin", tarfile.REGTYPE),
        ("usr/lib/.wh.empty", tarfile.REGTYPE),
        ("usr/lib/fresh", tarfile.REGTYPE),
    ]
    # applying the export on a copy of the parent reproduces the child
    target = tmp_path / "target"
    subprocess.run(["cp", "-a", str(parent), str(target)], check=True)
    with export_changes(child, changes) as stream:
        assert apply_tar(stream, target) == changes_size(child, changes) == len("fresh")
    assert snapshot(target) == snapshot(child)


def test_export_read_by_tarfile(tmp_path: Path) -> None:
    src = build_sample_tree(tmp_path / "src")
    changes = tree_changes(src, None)
    maps = IDMappings(uids=[IDMap(0, 0, 100000)], gids=[IDMap(0, 0, 100000)])
    with (
        export_changes(src, changes, id_maps=maps) as stream,
        tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar,
    ):
        members = {m.name: m for m in tar}
    assert len(members) == len(changes)
    assert not any(name.startswith(("/", "./")) for name in members)
    passwd = members["etc/passwd"]
    hl = members["etc/passwd.hl"]
    assert {passwd.type, hl.type} == {tarfile.REGTYPE, tarfile.LNKTYPE}
    assert (passwd.uid, passwd.gid, passwd.mode) == (1000, 1001, 0o644)
    assert float(passwd.pax_headers["mtime"]) == pytest.approx(1_600_000_000.123456789)
    assert members["bin/su"].mode == 0o4755
    assert members["tmp"].mode == 0o1777 and members["tmp"].isdir()
    assert members["lib"].issym() and members["lib"].linkname == "usr/lib"
    assert members["long-link"].linkname == "../" * 40 + "x" * 60
    assert members["dev/loop9"].isblk() and (members["dev/loop9"].devmajor, members["dev/loop9"].devminor) == (7, 9)
    assert members["run/fifo"].isfifo()
    assert "caf\udce9/na\udcefve" in members
    assert members["usr/lib/big.bin"].size == 3 * 1024 * 1024


def test_export_maps_ids_back_to_container(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_text("x")
    os.chown(root / "f", 100005, 200007)
    maps = IDMappings(uids=[IDMap(0, 100000, 65536)], gids=[IDMap(0, 200000, 65536)])
    with (
        export_changes(root, tree_changes(root, None), id_maps=maps) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        member = next(iter(tar))
    assert (member.uid, member.gid) == (5, 7)


def test_export_apply_round_trip_reproduces_the_tree(tmp_path: Path) -> None:
    src = build_sample_tree(tmp_path / "src")
    changes = tree_changes(src, None)
    dest = tmp_path / "dest"
    dest.mkdir()
    with export_changes(src, changes) as stream:
        size = apply_tar(stream, dest)
    assert size == changes_size(src, changes)
    assert snapshot(dest, skip_root=True) == snapshot(src, skip_root=True)


def test_close_runs_on_close_once_and_stops_generation(tmp_path: Path) -> None:
    src = build_sample_tree(tmp_path / "src")
    calls: list[int] = []
    stream = export_changes(src, tree_changes(src, None), on_close=lambda: calls.append(1))
    stream.read(1000)
    stream.close()
    stream.close()
    assert calls == [1]


def test_changes_sorted_and_kinds(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "a b").write_text("")
    (root / "a").mkdir()
    (root / "a/x").write_text("")
    changes = tree_changes(root, None)
    assert [c.path for c in changes] == sorted(c.path for c in changes)
    assert {c.kind for c in changes} == {ChangeKind.ADD}
