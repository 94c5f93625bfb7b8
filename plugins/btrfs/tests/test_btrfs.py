"""What is peculiar to the btrfs driver: subvolumes, nested subvolumes, qgroup quotas, support detection.

Oracles are independent of the driver: ``os.lstat`` (inode 256 marks a
subvolume root), the ``btrfs`` command (``subvolume show/list``,
``qgroup show``), and writes that the kernel refuses.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from layerstore import CreateOpts, load_driver
from layerstore.config import Settings, open_driver_for
from layerstore.errors import ConfigError, DriverNotSupported, LayerInUse, LayerNotFound
from layerstore.process import run_command
from layerstore.testing.loop import loop_filesystem_or_unavailable
from layerstore_btrfs import _btrfs, parse_size

BASE = "a" * 64
CHILD = "b" * 64
GRANDCHILD = "c" * 64


def btrfs(*args: str | Path) -> str:
    return run_command(["btrfs", *map(str, args)]).stdout.decode()


def subvolume_field(path: Path | str, field: str) -> str:
    match = re.search(rf"^\s*{re.escape(field)}:\s*(.*)$", btrfs("subvolume", "show", path), re.MULTILINE)
    assert match, f"no {field} in btrfs subvolume show {path}"
    return match.group(1).strip()


def listed_subvolumes(mnt: Path) -> list[str]:
    """Paths (relative to the top level) of every live subvolume of the filesystem."""
    return [line.split(" path ", 1)[1] for line in btrfs("subvolume", "list", mnt).splitlines() if " path " in line]


def write_fsynced(path: Path, megabytes: int) -> None:
    chunk = os.urandom(1024 * 1024)  # incompressible, in case the filesystem compresses
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for _ in range(megabytes):
            os.write(fd, chunk)
            os.fsync(fd)
    finally:
        os.close(fd)


def test_layers_are_subvolumes_and_a_child_is_a_snapshot(btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    base = Path(driver.get(BASE))
    root = os.lstat(base)
    assert root.st_ino == _btrfs.FIRST_FREE_OBJECTID
    assert (root.st_mode & 0o7777, root.st_uid, root.st_gid) == (0o755, 0, 0)
    assert list(base.iterdir()) == []
    (base / "file").write_bytes(b"parent")
    driver.create(CHILD, BASE)
    child = Path(driver.get(CHILD))
    assert os.lstat(child).st_ino == _btrfs.FIRST_FREE_OBJECTID
    assert subvolume_field(child, "Parent UUID") == subvolume_field(base, "UUID")
    assert (child / "file").read_bytes() == b"parent"
    (child / "file").write_bytes(b"child")
    (base / "new").write_bytes(b"later")
    assert (base / "file").read_bytes() == b"parent"
    assert not (child / "new").exists()
    assert driver.get(CHILD) == str(child)  # idempotent: the same path
    driver.put(CHILD)
    driver.put(CHILD)
    driver.put(BASE)


def test_base_layer_root_is_owned_by_the_remapped_root(btrfs_home: Path) -> None:
    from layerstore import IDMap, IDMappings

    maps = IDMappings(uids=(IDMap(0, 100000, 65536),), gids=(IDMap(0, 200000, 65536),))
    driver = load_driver("btrfs", btrfs_home, id_maps=maps)
    driver.create(BASE)
    st = os.lstat(driver.get(BASE))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (100000, 200000, 0o755)
    driver.put(BASE)


def test_nested_subvolumes_are_removed_with_the_layer(btrfs_mount: Path, btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    layer = Path(driver.get(BASE))
    (layer / "deep" / "er").mkdir(parents=True)
    btrfs("subvolume", "create", layer / "top")
    btrfs("subvolume", "create", layer / "top" / "inner")
    btrfs("subvolume", "create", layer / "deep" / "er" / "sub")
    (layer / "top" / "inner" / "data").write_bytes(b"x" * 10000)
    btrfs("subvolume", "snapshot", "-r", layer / "top", layer / "deep" / "readonly")
    layer_rel = layer.relative_to(btrfs_mount).as_posix()
    nested = {p for p in listed_subvolumes(btrfs_mount) if p.startswith(layer_rel + "/")}
    assert nested == {
        f"{layer_rel}/top",
        f"{layer_rel}/top/inner",
        f"{layer_rel}/deep/er/sub",
        f"{layer_rel}/deep/readonly",
    }
    # The ioctl listing and the inode-256 walk agree, and both list the deepest first.
    by_ioctl = _btrfs.nested_subvolumes(layer)
    by_walk = _btrfs.nested_subvolumes_by_walk(layer)
    assert sorted(by_ioctl) == sorted(by_walk) == sorted(layer / p.removeprefix(layer_rel + "/") for p in nested)
    for order in (by_ioctl, by_walk):
        assert order.index(layer / "top" / "inner") < order.index(layer / "top")
    driver.put(BASE)

    driver.remove(BASE)
    assert not driver.exists(BASE)
    assert not layer.exists()
    left = [p for p in listed_subvolumes(btrfs_mount) if p.startswith(btrfs_home.relative_to(btrfs_mount).as_posix())]
    assert left == []
    assert list((btrfs_home / "trash").iterdir()) == []


def test_a_parent_is_kept_until_its_children_are_gone(btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    driver.create(CHILD, BASE)
    driver.create(GRANDCHILD, CHILD)
    for layer in (BASE, CHILD):
        with pytest.raises(LayerInUse, match=layer):
            driver.remove(layer)
        assert driver.exists(layer)
    # A second driver object on the same home (another process) sees the same records.
    other = load_driver("btrfs", btrfs_home)
    with pytest.raises(LayerInUse):
        other.remove(CHILD)
    other.remove(GRANDCHILD)
    driver.remove(CHILD)
    driver.remove(BASE)
    for layer in (BASE, CHILD, GRANDCHILD):
        assert not driver.exists(layer)
    with pytest.raises(LayerNotFound):
        driver.remove(BASE)
    assert driver.status()[-1] == ("Layers", "0")


def test_metadata_and_status_report_the_real_subvolume_and_filesystem(btrfs_mount: Path, btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    driver.create(CHILD, BASE)
    meta = driver.metadata(CHILD)
    assert meta["path"] == str(btrfs_home / "subvolumes" / CHILD)
    assert meta["subvolume_id"] == subvolume_field(meta["path"], "Subvolume ID")
    assert meta["parent"] == BASE
    status = dict(driver.status())
    show = btrfs("filesystem", "show", btrfs_mount)
    assert f"uuid: {status['Filesystem UUID']}" in show
    assert f"path {status['Device']}" in show
    assert status["Layers"] == "2"
    assert status["Quota"] == "disabled"


def test_driver_options_and_unknown_storage_options_are_config_errors(btrfs_home: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'min_space' for driver btrfs"):
        load_driver("btrfs", btrfs_home, {"min_space": "1G"})
    driver = load_driver("btrfs", btrfs_home)
    with pytest.raises(ConfigError, match=r"unknown storage option.*inodes"):
        driver.create(BASE, opts=CreateOpts(storage_opts={"inodes": "5"}))
    with pytest.raises(ConfigError, match="invalid size option 'ten'"):
        driver.create(BASE, opts=CreateOpts(storage_opts={"size": "ten"}))
    assert not driver.exists(BASE)
    assert list((btrfs_home / "subvolumes").iterdir()) == []
    assert list((btrfs_home / "staging").iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("10M", 10 << 20), ("10m", 10 << 20), ("1G", 1 << 30), ("1.5GiB", 3 << 29), ("512kb", 512 << 10)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1M", "10X", "0", "1 0M"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


def test_quota_limits_writes_and_survives_a_remount(small_btrfs: Path) -> None:
    home = small_btrfs / "store" / "btrfs"
    driver = load_driver("btrfs", home)
    driver.create(BASE, opts=CreateOpts(storage_opts={"size": "10M"}))
    driver.create(CHILD)  # no quota on this one
    layer = Path(driver.get(BASE))
    assert dict(driver.status())["Quota"] == "enabled"
    assert driver.metadata(BASE)["quota"] == str(10 << 20)
    write_fsynced(layer / "under", 4)  # well under the limit
    with pytest.raises(OSError) as info:
        write_fsynced(layer / "past", 20)
    assert info.value.errno in (errno.EDQUOT, errno.ENOSPC)
    write_fsynced(Path(driver.get(CHILD)) / "free", 20)  # the limit is per layer
    driver.put(BASE)
    driver.put(CHILD)

    # The limit is in the filesystem: it holds after umount + mount of the device.
    device = dict(driver.status())["Device"]
    run_command(["umount", str(small_btrfs)])
    run_command(["mount", "-t", "btrfs", device, str(small_btrfs)])
    driver = load_driver("btrfs", home)
    layer = Path(driver.get(BASE))
    subvol_id = driver.metadata(BASE)["subvolume_id"]
    qgroups = btrfs("qgroup", "show", "-r", "--raw", small_btrfs)
    assert re.search(rf"^0/{subvol_id}\s+\d+\s+\d+\s+{10 << 20}\s", qgroups, re.MULTILINE), qgroups
    (layer / "past").unlink(missing_ok=True)
    run_command(["sync"])
    btrfs("quota", "rescan", "-w", small_btrfs)
    with pytest.raises(OSError) as info:
        write_fsynced(layer / "again", 20)
    assert info.value.errno in (errno.EDQUOT, errno.ENOSPC)
    driver.put(BASE)
    driver.remove(BASE)
    assert not driver.exists(BASE)


def test_a_child_with_quota_counts_what_it_shares_with_its_parent(small_btrfs: Path) -> None:
    driver = load_driver("btrfs", small_btrfs / "btrfs")
    driver.create(BASE)
    write_fsynced(Path(driver.get(BASE)) / "big", 8)
    driver.create(CHILD, BASE, CreateOpts(storage_opts={"size": "12M"}))
    child = Path(driver.get(CHILD))
    write_fsynced(child / "small", 2)
    with pytest.raises(OSError) as info:
        write_fsynced(child / "more", 8)
    assert info.value.errno in (errno.EDQUOT, errno.ENOSPC)
    driver.put(CHILD)
    driver.put(BASE)


def test_a_home_not_on_btrfs_is_not_supported(tmp_path: Path) -> None:
    with loop_filesystem_or_unavailable("btrfs", tmp_path / "loop", "ext4", 32) as ext4:
        home = ext4 / "store" / "btrfs"
        with pytest.raises(DriverNotSupported, match=rf"btrfs: {re.escape(str(home))} is on ext4, not btrfs"):
            load_driver("btrfs", home)
        assert not (ext4 / "store").exists()


def test_automatic_selection_takes_btrfs_on_btrfs(btrfs_mount: Path, tmp_path: Path) -> None:
    root = btrfs_mount / "auto" / tmp_path.name
    driver = open_driver_for(Settings(root=root, driver=None, driver_source="auto"))
    assert driver.name == "btrfs"
    assert driver.home == root / "btrfs"


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "home-with-data"])
def test_automatic_selection_keeps_btrfs_when_it_cannot_run(tmp_path: Path, recorded: bool) -> None:
    with loop_filesystem_or_unavailable("btrfs", tmp_path / "loop", "ext4", 32) as ext4:
        root = ext4 / "store"
        # A store made with btrfs: its record (or, for an older store, its non-empty btrfs home) says so.
        (root / "btrfs" / "subvolumes").mkdir(parents=True)
        if recorded:
            (root / ".driver").write_text("btrfs\n")
        settings = Settings(root=root, driver=None, driver_source="auto")
        with pytest.raises(DriverNotSupported) as info:
            open_driver_for(settings)
        assert str(info.value) == (
            f"the store at {root} uses driver btrfs, which cannot start: btrfs: {root / 'btrfs'} is on ext4, not btrfs"
        )
        assert sorted(p.name for p in root.iterdir()) == ([".driver"] if recorded else []) + ["btrfs"]


def test_a_killed_removal_or_creation_is_cleaned_up_on_open(btrfs_mount: Path, btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    btrfs("subvolume", "create", Path(driver.get(BASE)) / "nested")
    driver.put(BASE)
    # What a process killed half-way leaves: a layer renamed into trash/, a snapshot in staging/.
    os.rename(btrfs_home / "subvolumes" / BASE, btrfs_home / "trash" / f"{BASE}.dead")
    _btrfs.create_subvolume(btrfs_home / "staging", f"{CHILD}.dead")
    load_driver("btrfs", btrfs_home)
    assert list((btrfs_home / "trash").iterdir()) == []
    assert list((btrfs_home / "staging").iterdir()) == []
    home_rel = btrfs_home.relative_to(btrfs_mount).as_posix()
    assert [p for p in listed_subvolumes(btrfs_mount) if p.startswith(home_rel)] == []


def test_a_read_only_layer_is_frozen_after_its_diff_but_children_and_removal_work(btrfs_home: Path) -> None:
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
    data.seek(0)
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE, opts=CreateOpts(read_only=True))
    assert driver.apply_diff(BASE, None, data) == 4
    assert subvolume_field(btrfs_home / "subvolumes" / BASE, "Flags") == "readonly"
    with driver.mounted(BASE) as path, pytest.raises(OSError) as err:
        (Path(path) / "f").write_bytes(b"changed")
    assert err.value.errno == errno.EROFS
    driver.create(CHILD, BASE)
    with driver.mounted(CHILD) as path:
        (Path(path) / "f").write_bytes(b"child")
    driver.remove(CHILD)
    driver.remove(BASE)
    assert not driver.exists(BASE)


def test_check_lists_and_gc_removes_what_killed_processes_left(btrfs_mount: Path, btrfs_home: Path) -> None:
    driver = load_driver("btrfs", btrfs_home)
    driver.create(BASE)
    # A create killed after writing its records but before its rename, with a temporary record file,
    # a staged snapshot, and a removal killed while deleting (its lock file unheld).
    (btrfs_home / "parents" / CHILD).write_text(BASE)
    (btrfs_home / "parents" / f".tmp-{GRANDCHILD}.1234").write_text(CHILD)
    (btrfs_home / "readonly" / CHILD).touch()
    _btrfs.snapshot_subvolume(btrfs_home / "subvolumes" / BASE, btrfs_home / "staging", f"{CHILD}.dead")
    _btrfs.create_subvolume(btrfs_home / "trash", f"{GRANDCHILD}.dead")

    listed = driver.orphans()
    expected = {
        f"btrfs parents/{CHILD}",
        f"btrfs parents/.tmp-{GRANDCHILD}.1234",
        f"btrfs readonly/{CHILD}",
        f"btrfs staging/{CHILD}.dead",
        f"btrfs trash/{GRANDCHILD}.dead",
    }
    assert set(listed) == expected
    assert set(driver.gc([BASE])) == expected
    assert driver.orphans() == []
    assert sorted(os.listdir(btrfs_home / "trash")) == []
    home_rel = btrfs_home.relative_to(btrfs_mount).as_posix()
    assert [p for p in listed_subvolumes(btrfs_mount) if p.startswith(home_rel)] == [f"{home_rel}/subvolumes/{BASE}"]
    driver.remove(BASE)


def _commits(stats: Path) -> int:
    """Transactions committed on the filesystem so far (``commit_stats``, Linux 6.0)."""
    for line in stats.read_text().splitlines():
        if line.startswith("commits "):
            return int(line.split()[1])
    raise AssertionError(f"no commit count in {stats}")


def _write_fsynced(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"y" * 100_000)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["base", "child"])
def test_an_fsync_after_creating_a_layer_is_no_full_commit(plain_btrfs: Path, kind: str) -> None:
    """Creating a layer commits btrfs's transaction: an fsync in the import that follows uses the log tree.

    In the transaction that created (and renamed) a subvolume, btrfs turns
    every fsync into a commit of the whole transaction, which would then
    include all the files the import wrote.  (On the shared test filesystem,
    with 64 KiB nodes, btrfs also commits to make room for metadata: not here.)
    """
    home = plain_btrfs / "home"
    driver = load_driver("btrfs", home)
    stats = Path("/sys/fs/btrfs", _btrfs.filesystem_uuid(home), "commit_stats")
    if not stats.exists():
        pytest.skip("this kernel has no btrfs commit_stats (Linux 6.0)")
    if kind == "child":
        driver.create(BASE)
        (Path(driver.get(BASE)) / "inherited").write_bytes(b"p" * 5000)
        driver.put(BASE)
    layer_id = CHILD if kind == "child" else BASE
    parent = BASE if kind == "child" else None
    metadata = home / "metadata"
    _write_fsynced(metadata)  # the first fsync on a new filesystem commits (no log tree yet)
    btrfs("filesystem", "sync", plain_btrfs)  # wakes the cleaner for the probe's deleted subvolume
    btrfs("subvolume", "sync", plain_btrfs)  # and waits until its commits are over
    before = _commits(stats)
    driver.create(layer_id, parent)
    committed = _commits(stats)
    assert committed > before, "creating the layer did not commit the transaction"
    layer = Path(driver.get(layer_id))
    for n in range(50):
        (layer / f"file{n}").write_bytes(b"x" * 5000)
    _write_fsynced(metadata)
    assert _commits(stats) == committed, "the fsync committed the whole transaction"
    driver.put(layer_id)
