"""Tests of what is peculiar to the overlay driver: short links, the kernel's depth limit,
kernel whiteouts, mount life cycle.  Everything common to drivers is in the conformance suite."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layerstore import Driver
from layerstore.change import Change, ChangeKind
from layerstore.errors import ConfigError, CorruptMetadata, DriverNotSupported, LayerNotFound, LimitExceeded
from layerstore.testing.loop import mounts_under
from layerstore_overlay._mount import unmount

# -- helpers -------------------------------------------------------------------


def tar_of(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """A small tar: members are (name, type, content) with type "f" file, "d" dir, "l" symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def layer(drv: Driver, layer_id: str, parent: str | None, *members: tuple[str, str, bytes | str]) -> int:
    """Create `layer_id` on `parent` and apply a tar of `members`; return apply_diff's size."""
    drv.create(layer_id, parent)
    return drv.apply_diff(layer_id, parent, tar_of(*members))


def overlay_mounts(path: Path) -> list[str]:
    """Overlay mount points at or below `path`, read from /proc/mounts (independent of the driver)."""
    root = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
        return [
            fields[1]
            for fields in (line.split(" ", 3) for line in f)
            if fields[2] == "overlay" and (fields[1] == root or fields[1].startswith(root + "/"))
        ]


def tar_members(stream: io.BufferedIOBase) -> dict[str, tarfile.TarInfo]:
    """Members of a tar stream by name (read with the stdlib, independently of the driver)."""
    with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return {m.name: m for m in tar}


# -- depth limit -----------------------------------------------------------------


def test_chain_at_kernel_limit_mounts_and_one_more_fails(driver: Driver, store_root: Path) -> None:
    depth = driver.max_depth
    assert depth == 501, "fsopen with lowerdir+ on this kernel: the top layer plus the kernel's 500 lowers"
    start = time.monotonic()
    parent = None
    for i in range(depth):
        layer_id = f"layer{i:03d}"
        layer(driver, layer_id, parent, (f"f{i:03d}", "f", str(i)))
        parent = layer_id
    created = time.monotonic()
    top = driver.get(parent)
    mounted = time.monotonic()
    try:
        names = sorted(os.listdir(top))
        assert names == [f"f{i:03d}" for i in range(depth)]
        assert Path(top, "f000").read_text() == "0"
        assert Path(top, "f500").read_text() == "500"
        assert len(overlay_mounts(store_root)) == 1
    finally:
        driver.put(parent)
    print(f"\n{depth}-layer chain: create+apply {created - start:.2f}s, mount {mounted - created:.3f}s")
    with pytest.raises(LimitExceeded, match="500") as info:
        driver.create("one-too-many", parent)
    assert "at most 500" in str(info.value)
    assert not driver.exists("one-too-many")
    assert not (driver.home / "one-too-many").exists()
    assert overlay_mounts(store_root) == []


# -- short links -------------------------------------------------------------------


def _chain(driver: Driver, n: int) -> list[str]:
    ids, parent = [], None
    for i in range(n):
        layer_id = f"c{i}"
        layer(driver, layer_id, parent, (f"file{i}", "f", f"content {i}"))
        ids.append(layer_id)
        parent = layer_id
    return ids


def test_deleted_short_links_are_recreated(driver: Driver) -> None:
    ids = _chain(driver, 4)
    links = driver.home / "l"
    for link in links.iterdir():
        link.unlink()
    for count, layer_id in enumerate(ids, start=1):
        with driver.mounted(layer_id) as path:
            assert sorted(os.listdir(path)) == [f"file{i}" for i in range(count)]
            assert Path(path, "file0").read_text() == "content 0"
    # every layer below the top has its link back, pointing at its own diff dir
    for layer_id in ids[:-1]:
        short = (driver.home / layer_id / "link").read_text()
        assert os.readlink(links / short) == f"../{layer_id}/diff"


def test_missing_link_file_and_link_says_what_to_restore(driver: Driver) -> None:
    ids = _chain(driver, 3)
    short = (driver.home / "c0" / "link").read_text()
    (driver.home / "c0" / "link").unlink()
    (driver.home / "l" / short).unlink()
    with pytest.raises(CorruptMetadata) as info:
        driver.get(ids[-1])
    message = str(info.value)
    assert "c0" in message and short in message and "printf" in message
    assert driver.references(ids[-1]) == 0
    # following the advice repairs the store
    (driver.home / "c0" / "link").write_text(short)
    with driver.mounted(ids[-1]) as path:
        assert Path(path, "file0").read_text() == "content 0"


def test_layout_is_overlay2(driver: Driver) -> None:
    _chain(driver, 3)
    home = driver.home
    short = {i: (home / i / "link").read_text() for i in ("c0", "c1", "c2")}
    assert all(len(s) == 26 for s in short.values())
    assert not (home / "c0" / "lower").exists()
    assert (home / "c2" / "lower").read_text() == f"l/{short['c1']}:l/{short['c0']}"
    meta = driver.metadata("c2")
    assert meta["LowerDir"] == f"{home / 'c1' / 'diff'}:{home / 'c0' / 'diff'}"
    assert meta["UpperDir"] == str(home / "c2" / "diff")
    assert meta["WorkDir"] == str(home / "c2" / "work")
    assert meta["MergedDir"] == str(home / "c2" / "merged")
    # a base layer is not mounted: its diff dir is its filesystem
    assert driver.get("c0") == str(home / "c0" / "diff")
    driver.put("c0")


# -- kernel whiteouts and opaque directories ---------------------------------------


def _is_kernel_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0


def test_whiteouts_convert_both_ways(driver: Driver) -> None:
    layer(
        driver,
        "base",
        None,
        ("gone", "f", "x"),
        ("keep", "f", "k"),
        ("dir", "d", ""),
        ("dir/old1", "f", "1"),
        ("dir/sub", "d", ""),
        ("dir/sub/old2", "f", "2"),
    )
    size = layer(
        driver,
        "child",
        "base",
        (".wh.gone", "f", ""),
        ("dir", "d", ""),
        ("dir/.wh.old1", "f", ""),  # redundant under the opaque marker: must not stay as a device file
        ("dir/.wh..wh..opq", "f", ""),
        ("dir/new", "f", "new!"),
    )
    assert size == 4
    diff_dir = driver.home / "child" / "diff"
    assert _is_kernel_whiteout(diff_dir / "gone")
    assert os.getxattr(diff_dir / "dir", "trusted.overlay.opaque") == b"y"
    assert not (diff_dir / "dir" / ".wh..wh..opq").exists()
    assert sorted(os.listdir(diff_dir / "dir")) == ["new"]
    assert not (diff_dir / ".wh.gone").exists()

    with driver.mounted("child") as path:
        assert sorted(os.listdir(path)) == ["dir", "keep"]
        assert os.listdir(Path(path, "dir")) == ["new"]

    members = tar_members(driver.diff("child", "base"))
    assert set(members) == {".wh.gone", "dir", "dir/.wh..wh..opq", "dir/new"}
    assert members[".wh.gone"].isreg() and members[".wh.gone"].size == 0
    assert members["dir/.wh..wh..opq"].isreg()
    assert not any("overlay" in key for m in members.values() for key in m.pax_headers)
    assert driver.diff_size("child", "base") == size
    assert driver.changes("child", "base") == [
        Change("/dir", ChangeKind.MODIFY),
        Change("/dir/new", ChangeKind.ADD),
        Change("/dir/old1", ChangeKind.DELETE),
        Change("/dir/sub", ChangeKind.DELETE),
        Change("/gone", ChangeKind.DELETE),
    ]


def test_changes_made_through_the_mount_are_read_from_diff(driver: Driver) -> None:
    layer(driver, "base", None, ("a", "d", ""), ("a/x", "f", "x"), ("a/y", "f", "y"), ("b", "f", "b"))
    driver.create("rw", "base")
    with driver.mounted("rw") as path:
        os.unlink(Path(path, "a", "x"))
        Path(path, "a", "z").write_text("zz")
        Path(path, "b").write_text("changed")
    assert driver.changes("rw", "base") == [
        Change("/a", ChangeKind.MODIFY),
        Change("/a/x", ChangeKind.DELETE),
        Change("/a/z", ChangeKind.ADD),
        Change("/b", ChangeKind.MODIFY),
    ]
    assert _is_kernel_whiteout(driver.home / "rw" / "diff" / "a" / "x")
    members = tar_members(driver.diff("rw", "base"))
    assert sorted(members) == ["a", "a/.wh.x", "a/z", "b"]
    assert driver.diff_size("rw", "base") == len("zz") + len("changed")


def test_path_deleted_in_intermediate_layer_and_created_again_is_add(driver: Driver) -> None:
    layer(driver, "l1", None, ("x", "f", "1"), ("d", "d", ""), ("d/a", "f", "a"))
    layer(driver, "l2", "l1", (".wh.x", "f", ""), ("d", "d", ""), ("d/.wh..wh..opq", "f", ""))
    layer(driver, "l3", "l2", ("x", "f", "3"), ("d", "d", ""), ("d/a", "f", "again"))
    changes = {c.path: c.kind for c in driver.changes("l3", "l2")}
    assert changes["/x"] == ChangeKind.ADD
    assert changes["/d/a"] == ChangeKind.ADD
    with driver.mounted("l3") as path:
        assert Path(path, "x").read_text() == "3"
        assert Path(path, "d", "a").read_text() == "again"


def test_whiteouts_in_a_base_layer_leave_no_device_files(driver: Driver) -> None:
    layer(driver, "base", None, ("a", "f", "a"), (".wh.nothing", "f", ""))
    with driver.mounted("base") as path:
        assert os.listdir(path) == ["a"]


# -- mount life cycle -----------------------------------------------------------------


def test_get_is_idempotent_and_put_unmounts(driver: Driver, store_root: Path) -> None:
    _chain(driver, 2)
    first = driver.get("c1")
    second = driver.get("c1")
    assert first == second == str(driver.home / "c1" / "merged")
    assert overlay_mounts(store_root) == [first]
    driver.put("c1")
    assert overlay_mounts(store_root) == [first]  # one reference left
    driver.put("c1")
    assert overlay_mounts(store_root) == []
    driver.put("c1")  # not held: harmless


def test_remove_right_after_put(driver: Driver, store_root: Path) -> None:
    _chain(driver, 2)
    path = driver.get("c1")
    with open(Path(path, "file0"), "rb") as f:
        assert f.read() == b"content 0"
    driver.put("c1")
    driver.remove("c1")
    assert not driver.exists("c1")
    assert not (driver.home / "c1").exists()
    assert [p.name for p in driver.home.iterdir() if p.name.startswith(".trash")] == []
    assert overlay_mounts(store_root) == []
    with pytest.raises(LayerNotFound):
        driver.get("c1")


def test_forced_remove_of_a_mounted_layer_unmounts_it(driver: Driver, store_root: Path) -> None:
    _chain(driver, 2)
    driver.get("c1")
    driver.remove("c1", force=True)
    assert not driver.exists("c1")
    assert overlay_mounts(store_root) == []
    assert sorted(p.name for p in (driver.home / "l").iterdir()) == [(driver.home / "c0" / "link").read_text()]


_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from layerstore import load_driver
    drv = load_driver("overlay", sys.argv[1])
    print(drv.get(sys.argv[2]), flush=True)
    sys.stdin.readline()
    drv.put(sys.argv[2])
    print("released", flush=True)
    """
)


def test_two_processes_share_a_mount(driver: Driver, store_root: Path) -> None:
    _chain(driver, 2)
    proc = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(driver.home), "c1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        other_path = proc.stdout.readline().strip()
        mine = driver.get("c1")
        assert mine == other_path
        assert driver.references("c1") == 2
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        assert proc.wait() == 0
        # the other process's put did not unmount what this one still uses
        assert Path(mine, "file1").read_text() == "content 1"
        assert overlay_mounts(store_root) == [mine]
        driver.put("c1")
        assert overlay_mounts(store_root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cleanup_leaves_no_mount(store_root: Path, open_overlay: Callable[..., Driver]) -> None:
    drv = open_overlay(store_root / "home")
    ids = _chain(drv, 3)
    for layer_id in ids:
        drv.get(layer_id)
        drv.get(layer_id)
    assert len(overlay_mounts(store_root)) == 2
    drv.cleanup()
    assert overlay_mounts(store_root) == []


# -- loading and options -----------------------------------------------------------------


def test_unknown_option_is_a_config_error(store_root: Path, open_overlay: Callable[..., Driver]) -> None:
    with pytest.raises(ConfigError, match="nosuch"):
        open_overlay(store_root / "home", {"nosuch": "1"})


def test_storage_options_are_refused(driver: Driver) -> None:
    from layerstore import CreateOpts

    with pytest.raises(ConfigError, match="size"):
        driver.create("q", None, CreateOpts(storage_opts={"size": "10M"}))
    assert not driver.exists("q")


def test_classic_mount_fallback_works(store_root: Path, open_overlay: Callable[..., Driver]) -> None:
    drv = open_overlay(store_root / "home", {"mount_api": "mount"})
    try:
        assert drv.max_depth == 129
        assert ("Mount API", "mount(8) (classic)") in drv.status()
        ids = _chain(drv, 3)
        with drv.mounted(ids[-1]) as path:
            assert sorted(os.listdir(path)) == ["file0", "file1", "file2"]
        # at the limit, with 64-hex IDs as images have, the mount data still fits in a page
        parent = None
        for i in range(129):
            layer_id = f"{i:064x}"
            layer(drv, layer_id, parent, (f"f{i:03d}", "f", str(i)))
            parent = layer_id
        with drv.mounted(parent) as path:
            assert len(os.listdir(path)) == 129
        with pytest.raises(LimitExceeded, match="128"):
            drv.create("f" * 64, parent)
    finally:
        drv.cleanup()


def test_status_reports_backing_fs_and_mount_api(driver: Driver) -> None:
    _chain(driver, 2)
    status = dict(driver.status())
    assert status["Backing Filesystem"] == "extfs"
    assert status["Supports d_type"] == "true"
    assert status["Native Overlay Diff"] == "true"
    assert status["Mount API"].startswith("fsopen")
    assert status["Layers"] == "2"


def test_home_on_overlayfs_is_not_supported(store_root: Path) -> None:
    for d in ("lower", "upper", "work", "merged"):
        (store_root / d).mkdir()
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={store_root / 'lower'},upperdir={store_root / 'upper'},workdir={store_root / 'work'}",
            str(store_root / "merged"),
        ],
        check=True,
    )
    try:
        with pytest.raises(DriverNotSupported, match="overlayfs"):
            from layerstore import load_driver

            load_driver("overlay", store_root / "merged" / "home")
    finally:
        unmount(str(store_root / "merged"))
    assert mounts_under(store_root) == []


# -- read-only layers ------------------------------------------------------------------------


@pytest.mark.parametrize("mount_api", ["fsopen", "mount"])
def test_read_only_layers_refuse_writes(store_root: Path, open_overlay: Callable[..., Driver], mount_api: str) -> None:
    import errno

    from layerstore import CreateOpts

    drv = open_overlay(store_root / "home", {"mount_api": mount_api})
    try:
        ro = CreateOpts(read_only=True)
        drv.create("base", None, ro)
        drv.apply_diff("base", None, tar_of(("a", "f", "a")))
        drv.create("mid", "base", ro)
        drv.apply_diff("mid", "base", tar_of(("b", "f", "b")))
        drv.create("rw", "mid")
        for layer_id, names in (("base", ["a"]), ("mid", ["a", "b"])):
            with drv.mounted(layer_id) as path:
                assert path == str(drv.home / layer_id / "merged")
                assert sorted(os.listdir(path)) == names
                with pytest.raises(OSError) as info:
                    Path(path, "new").write_text("x")
                assert info.value.errno == errno.EROFS
        with drv.mounted("rw") as path:
            Path(path, "new").write_text("x")
            assert sorted(os.listdir(path)) == ["a", "b", "new"]
        assert overlay_mounts(store_root) == []
        assert mounts_under(store_root) == []
    finally:
        drv.cleanup()


# -- native diff against independent oracles ---------------------------------------------------


def _mutate(path: str) -> None:
    """A mix of what containers do to a tree through the overlay mount."""
    root = Path(path)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    os.chmod(root / "etc" / "hosts", 0o600)
    os.unlink(root / "etc" / "gone")
    os.rename(root / "etc" / "moved", root / "etc" / "moved-to")
    os.link(root / "etc" / "passwd", root / "etc" / "passwd-link")
    os.symlink("../etc/passwd", root / "etc" / "pw")
    import shutil

    shutil.rmtree(root / "var" / "cache")
    (root / "var" / "cache").mkdir()
    (root / "var" / "cache" / "fresh").write_text("f")
    shutil.rmtree(root / "opt")
    (root / "opt").write_text("now a file")
    os.unlink(root / "usr" / "bin" / "tool")
    (root / "usr" / "bin" / "tool").mkdir()
    (root / "new" / "deep").mkdir(parents=True)
    (root / "new" / "deep" / "x").write_bytes(b"\0" * 5000)
    os.mkfifo(root / "new" / "fifo")
    os.setxattr(root / "new" / "deep" / "x", "user.note", b"hello")


def _base_tar() -> io.BytesIO:
    return tar_of(
        ("etc", "d", ""),
        ("etc/passwd", "f", "old"),
        ("etc/hosts", "f", "127.0.0.1"),
        ("etc/gone", "f", "g"),
        ("etc/moved", "f", "m"),
        ("var", "d", ""),
        ("var/cache", "d", ""),
        ("var/cache/a", "f", "a"),
        ("var/cache/sub", "d", ""),
        ("var/cache/sub/b", "f", "b"),
        ("opt", "d", ""),
        ("opt/app", "f", "app"),
        ("usr", "d", ""),
        ("usr/bin", "d", ""),
        ("usr/bin/tool", "f", "t"),
        ("usr/bin/other", "f", "o"),
    )


def _tree(path: str) -> dict[str, tuple[int, int, bytes | str | None, list[tuple[str, bytes]]]]:
    """Every entry below `path` with mode, size, content or link target, xattrs (an os.lstat oracle)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            content: bytes | str | None = None
            if stat.S_ISREG(st.st_mode):
                content = Path(full).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(full)
            xattrs = sorted(
                (x, os.getxattr(full, x, follow_symlinks=False)) for x in os.listxattr(full, follow_symlinks=False)
            )
            result[os.path.relpath(full, path)] = (
                st.st_mode,
                st.st_size if content is not None else 0,
                content,
                xattrs,
            )
    return result


def test_native_diff_applies_to_the_same_tree(driver: Driver) -> None:
    driver.create("base")
    driver.apply_diff("base", None, _base_tar())
    driver.create("rw", "base")
    with driver.mounted("rw") as path:
        _mutate(path)
    changes = [str(c) for c in driver.changes("rw", "base")]
    assert changes == [
        "C /etc",
        "D /etc/gone",
        "C /etc/hosts",
        "D /etc/moved",
        "A /etc/moved-to",
        "C /etc/passwd",
        "A /etc/passwd-link",
        "A /etc/pw",
        "A /new",
        "A /new/deep",
        "A /new/deep/x",
        "A /new/fifo",
        "C /opt",
        "C /usr",
        "C /usr/bin",
        "C /usr/bin/tool",
        "C /var",
        "C /var/cache",
        "D /var/cache/a",
        "A /var/cache/fresh",
        "D /var/cache/sub",
    ]
    members = tar_members(driver.diff("rw", "base"))
    assert members["etc/passwd-link"].islnk() and members["etc/passwd-link"].linkname == "etc/passwd"
    assert members["var/cache/.wh..wh..opq"].isreg()
    assert ".wh.etc" not in members and "etc/.wh.gone" in members
    assert members["new/deep/x"].pax_headers["SCHILY.xattr.user.note"] == "hello"
    # the diff, applied on a fresh child of the same parent, gives the same tree
    driver.create("copy", "base")
    size = driver.apply_diff("copy", "base", driver.diff("rw", "base"))
    assert size == driver.diff_size("rw", "base") == driver.diff_size("copy", "base")
    with driver.mounted("rw") as original, driver.mounted("copy") as copy:
        assert _tree(copy) == _tree(original)


def test_native_changes_match_a_tree_comparison(driver: Driver) -> None:
    from layerstore.archive.changes import tree_changes

    driver.create("base")
    driver.apply_diff("base", None, _base_tar())
    driver.create("rw", "base")
    with driver.mounted("rw") as path:
        _mutate(path)
    driver.create("mid", "base")
    with driver.mounted("mid") as path:
        os.unlink(Path(path, "etc", "passwd"))
        import shutil

        shutil.rmtree(Path(path, "var"))
    driver.create("top", "mid")
    with driver.mounted("top") as path:
        Path(path, "etc", "passwd").write_text("again")
        Path(path, "var", "cache").mkdir(parents=True)
        Path(path, "var", "cache", "a").write_text("back")
    for layer_id, parent in (("rw", "base"), ("mid", "base"), ("top", "mid")):
        with driver.mounted(layer_id) as new, driver.mounted(parent) as old:
            expected = tree_changes(new, old)
        assert driver.changes(layer_id, parent) == expected, layer_id
    assert {str(c) for c in driver.changes("top", "mid")} >= {"A /etc/passwd", "A /var", "A /var/cache/a"}


# -- parents that change after children exist ---------------------------------------------------


def test_changing_a_parent_freezes_the_state_its_children_stack_on(driver: Driver, store_root: Path) -> None:
    layer(driver, "p", None, ("a", "f", "original"))
    layer(driver, "c", "p", ("b", "f", "child"))
    child_view = driver.get("c")  # stays mounted while the parent changes
    try:
        old_short = (driver.home / "p" / "link").read_text()
        with driver.mounted("p") as path:
            Path(path, "a").write_text("changed")
            Path(path, "new").write_text("n")
        new_short = (driver.home / "p" / "link").read_text()
        assert new_short != old_short
        assert os.readlink(driver.home / "l" / old_short) == f"../p/frozen-{old_short}"
        assert Path(child_view, "a").read_text() == "original"
        assert sorted(os.listdir(child_view)) == ["a", "b"]
    finally:
        driver.put("c")
    with driver.mounted("c") as path:
        assert sorted(os.listdir(path)) == ["a", "b"]
        assert Path(path, "a").read_text() == "original"
    # a child created now stacks on the changed parent
    driver.create("c2", "p")
    with driver.mounted("c2") as path:
        assert sorted(os.listdir(path)) == ["a", "new"]
    assert [str(c) for c in driver.changes("c", "p")] == ["A /b"]
    # links of frozen states heal too, and removal takes every link of the layer with it
    for link in (driver.home / "l").iterdir():
        link.unlink()
    with driver.mounted("c") as path:
        assert Path(path, "a").read_text() == "original"
    driver.remove("c")
    driver.remove("c2")
    driver.remove("p")
    assert list((driver.home / "l").iterdir()) == []
    assert overlay_mounts(store_root) == []


def test_mounting_a_parent_without_children_copies_nothing(driver: Driver) -> None:
    layer(driver, "p", None, ("a", "f", "a"))
    layer(driver, "c", "p", ("b", "f", "b"))
    short = (driver.home / "c" / "link").read_text()
    with driver.mounted("c") as path:
        Path(path, "x").write_text("x")
    assert (driver.home / "c" / "link").read_text() == short
    assert not any(p.name.startswith("frozen-") for p in (driver.home / "c").iterdir())


def test_mountopt_reaches_the_mount(store_root: Path, open_overlay: Callable[..., Driver]) -> None:
    drv = open_overlay(store_root / "home", {"mountopt": "noatime"})
    try:
        layer(drv, "p", None, ("a", "f", "a"))
        drv.create("c", "p")
        with drv.mounted("c") as path, open("/proc/mounts", encoding="utf-8") as f:
            options = next(line.split()[3] for line in f if line.split()[1] == path)
        assert "noatime" in options.split(",")
    finally:
        drv.cleanup()


def test_bad_mountopt_is_refused_at_load(store_root: Path) -> None:
    from layerstore import load_driver

    with pytest.raises(DriverNotSupported, match="no-such-option"):
        load_driver("overlay", store_root / "home", {"mountopt": "no-such-option"})


def test_against_another_parent_the_generic_comparison_answers(driver: Driver) -> None:
    from layerstore.archive.changes import tree_changes

    _chain(driver, 3)
    with driver.mounted("c2") as new, driver.mounted("c0") as old:
        expected = tree_changes(new, old)
    assert [str(c) for c in expected] == ["A /file1", "A /file2"]
    assert driver.changes("c2", "c0") == expected
    assert sorted(tar_members(driver.diff("c2", "c0"))) == ["file1", "file2"]
    assert driver.diff_size("c2", "c0") == len("content 1") + len("content 2")


def test_a_successful_probe_is_remembered_per_home_and_options(store_root: Path) -> None:
    from layerstore import load_driver
    from layerstore_overlay.driver import PROBE_CACHE

    home = store_root / "home"
    load_driver("overlay", home).cleanup()
    cache = home / PROBE_CACHE
    key, api = cache.read_text().rsplit("\n", 1)
    assert os.uname().release in key.split("\t")
    assert api in ("fsopen", "mount")
    assert not [p for p in os.listdir(home) if p.startswith(".probe-")]  # the test mount was cleaned up

    # A remembered probe is used as is; a stale one (other kernel) is replaced by a fresh probe.
    cache.write_text(f"{key.replace(os.uname().release, 'other-kernel')}\n{api}")
    load_driver("overlay", home).cleanup()
    assert cache.read_text() == f"{key}\n{api}"

    # Other mount options are not covered by the remembered probe: a bad one still fails at load.
    with pytest.raises(DriverNotSupported, match="no-such-option"):
        load_driver("overlay", home, {"mountopt": "no-such-option"})
    assert cache.read_text() == f"{key}\n{api}"
