"""What is peculiar to the zfs driver: clones and their snapshots, quotas, busy datasets, support detection.

Everything else is the conformance suite (test_zfs_conformance.py).  These run on
a real zfs-fuse pool (conftest.py).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from layerstore import CreateOpts, Driver, IDMap, IDMappings, load_driver
from layerstore.errors import ConfigError, DriverNotSupported, LayerInUse, StorageError
from layerstore.process import run_command
from layerstore.testing import unavailable
from layerstore_zfs import ZfsDriver
from layerstore_zfs._commands import ZfsCommands


@pytest.fixture
def driver(zfs_root: Path) -> Driver:
    """The zfs driver on a home inside the test's own dataset (fsname found from the mount)."""
    return load_driver("zfs", zfs_root / "home")


def datasets(driver: Driver, kind: str = "all") -> list[str]:
    """Every dataset/snapshot below the driver's parent dataset, from `zfs list` (independent of the driver)."""
    fsname = dict(driver.status())["Parent Dataset"]
    out = run_command(["zfs", "list", "-H", "-o", "name", "-r", "-t", kind, fsname]).stdout.decode()
    return [line for line in out.splitlines() if line != fsname]


def mounted_at(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def test_home_dataset_is_found_from_mountinfo(driver: Driver, zfs_root: Path) -> None:
    with open("/proc/self/mounts") as f:
        source = next(line.split()[0] for line in f if line.split()[1] == str(zfs_root))
    facts = dict(driver.status())
    assert facts["Parent Dataset"] == source
    assert facts["Health"] == "ONLINE"
    assert facts["Pool"] == source.split("/")[0]


def test_child_is_a_clone_and_its_snapshot_goes_with_it(driver: Driver) -> None:
    driver.create("base")
    with driver.mounted("base") as path:
        Path(path, "file").write_text("parent")
    driver.create("child", "base")
    meta = driver.metadata("child")
    assert meta["origin"] == f"{driver.metadata('base')['dataset']}@layerstore-clone-child"
    assert meta["mounted"] == "no", "a new layer must not stay mounted (zfs-fuse mounts clones)"
    assert any(name.endswith("@layerstore-clone-child") for name in datasets(driver, "snapshot"))
    with driver.mounted("child") as path:
        assert Path(path, "file").read_text() == "parent"
    driver.remove("child")
    assert datasets(driver, "snapshot") == []
    driver.remove("base")
    assert datasets(driver) == []


def test_reading_a_layer_writes_nothing(driver: Driver) -> None:
    """Base layers and clones carry atime=off (reads never need space: see the README, full pools)."""
    driver.create("base")
    driver.create("child", "base")
    for id in ("base", "child"):
        dataset = driver.metadata(id)["dataset"]
        out = run_command(["zfs", "get", "-H", "-o", "value", "atime", dataset]).stdout.decode().strip()
        assert out == "off", f"{dataset}: atime={out}"
    driver.remove("child")
    driver.remove("base")


def test_a_home_reached_through_a_symlink(zfs_root: Path, tmp_path: Path) -> None:
    """Mount points are checked against mountinfo, which shows real paths: a symlinked home must work."""
    link = tmp_path / "link"
    link.symlink_to(zfs_root)
    driver = load_driver("zfs", link / "home")
    driver.create("base")
    with driver.mounted("base") as path:
        Path(path, "file").write_text("through a symlink")
        assert Path(path).resolve() == Path(path)
    with driver.mounted("base") as path:
        assert Path(path, "file").read_text() == "through a symlink"
    driver.remove("base")


def test_removing_a_parent_with_a_child_is_refused(driver: Driver) -> None:
    driver.create("base")
    driver.create("child", "base")
    with pytest.raises(LayerInUse, match="child"):
        driver.remove("base")
    assert driver.exists("base")
    with driver.mounted("child"):
        pass
    driver.remove("child")
    driver.remove("base")
    assert not driver.exists("base")
    assert datasets(driver) == []


def test_remove_right_after_last_put(driver: Driver) -> None:
    parent = None
    for i in range(5):
        layer = f"l{i}"
        driver.create(layer, parent)
        path = driver.get(layer)
        driver.get(layer)
        Path(path, f"f{i}").write_bytes(os.urandom(4096))
        driver.put(layer)
        assert mounted_at(path), "one reference is still held"
        driver.put(layer)
        assert not mounted_at(path)
        parent = layer
    for i in reversed(range(5)):
        driver.remove(f"l{i}")
        assert not driver.exists(f"l{i}")
    assert datasets(driver) == []


def test_remove_takes_snapshots_made_inside_the_layer(driver: Driver) -> None:
    driver.create("base")
    dataset = driver.metadata("base")["dataset"]
    run_command(["zfs", "snapshot", f"{dataset}@mine"])
    driver.remove("base")
    assert not driver.exists("base")
    assert datasets(driver) == []


def test_quota_allows_writes_under_the_limit_and_refuses_past_it(driver: Driver) -> None:
    driver.create("q", opts=CreateOpts(storage_opts={"size": "4M"}))
    assert driver.metadata("q")["quota"] == str(4 * 1024 * 1024)
    with driver.mounted("q") as path:
        Path(path, "small").write_bytes(os.urandom(1024 * 1024))
        with pytest.raises(OSError) as info, open(Path(path, "big"), "wb") as f:
            for _ in range(16):
                f.write(os.urandom(1024 * 1024))
                f.flush()
                os.fsync(f.fileno())
        assert info.value.errno in (errno.EDQUOT, errno.ENOSPC)
        assert Path(path, "small").stat().st_size == 1024 * 1024
    driver.remove("q")


def test_quota_on_a_child(driver: Driver) -> None:
    driver.create("base")
    driver.create("child", "base", CreateOpts(storage_opts={"size": "2M"}))
    with driver.mounted("child") as path, pytest.raises(OSError) as info, open(Path(path, "big"), "wb") as f:
        for _ in range(8):
            f.write(os.urandom(1024 * 1024))
            f.flush()
            os.fsync(f.fileno())
    assert info.value.errno in (errno.EDQUOT, errno.ENOSPC)


def test_bad_storage_options(driver: Driver) -> None:
    with pytest.raises(ConfigError, match="unknown storage option"):
        driver.create("x", opts=CreateOpts(storage_opts={"colour": "red"}))
    with pytest.raises(ConfigError, match="not a size"):
        driver.create("y", opts=CreateOpts(storage_opts={"size": "lots"}))
    assert not driver.exists("x")
    assert not driver.exists("y")


def test_busy_layer_is_explained_and_released(driver: Driver) -> None:
    driver.create("busy")
    path = driver.get("busy")
    holder = subprocess.Popen(["sleep", "600"], cwd=path)
    try:
        # The last put cannot unmount under an open directory: the mount stays (no lazy unmount) ...
        driver.put("busy")
        assert mounted_at(path)
        assert driver.get("busy") == path
        driver.put("busy")
        # ... and removal says who holds it, leaving the layer whole.
        with pytest.raises(LayerInUse, match=rf"busy.*pid {holder.pid}"):
            driver.remove("busy")
        assert driver.exists("busy")
    finally:
        holder.kill()
        holder.wait()
    driver.remove("busy")
    assert not mounted_at(path)
    assert not driver.exists("busy")


def test_ids_that_zfs_would_refuse_are_stored_hashed(driver: Driver) -> None:
    layer = "odd id%with@chars"
    driver.create(layer)
    with driver.mounted(layer) as path:
        Path(path, "f").write_text("x")
    assert driver.exists(layer)
    assert "@" not in driver.metadata(layer)["dataset"]
    driver.remove(layer)
    assert not driver.exists(layer)


def test_root_of_a_base_layer_belongs_to_the_mapped_root(zfs_root: Path) -> None:
    maps = IDMappings(uids=[IDMap(0, 100000, 65536)], gids=[IDMap(0, 200000, 65536)])
    driver = load_driver("zfs", zfs_root / "home", id_maps=maps)
    driver.create("base")
    with driver.mounted("base") as path:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (100000, 200000, 0o755)
    assert not mounted_at(path)
    driver.remove("base")


def test_without_zfs_tools_the_driver_is_not_supported(
    zfs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DriverNotSupported, match="zfs: command not found"):
        load_driver("zfs", zfs_root / "home")


def test_home_not_on_zfs_is_not_supported(tmp_path: Path, zfs_pool: tuple[str, Path]) -> None:
    with pytest.raises(DriverNotSupported, match=r"is not on a zfs dataset.*set the fsname option"):
        load_driver("zfs", tmp_path / "home")


def test_fsname_option_puts_layers_anywhere(tmp_path: Path, zfs_root: Path) -> None:
    fsname = dict(load_driver("zfs", zfs_root / "probe").status())["Parent Dataset"]
    driver = load_driver("zfs", tmp_path / "home", {"fsname": fsname})
    driver.create("base")
    with driver.mounted("base") as path:
        assert path.startswith(str(tmp_path))
        Path(path, "f").write_text("x")
    assert driver.metadata("base")["dataset"] == f"{fsname}/base"
    driver.remove("base")


def test_unreachable_pool_or_missing_dataset(tmp_path: Path, zfs_pool: tuple[str, Path]) -> None:
    with pytest.raises(DriverNotSupported, match="pool is not reachable"):
        load_driver("zfs", tmp_path / "a", {"fsname": "lsnosuchpool/layers"})
    with pytest.raises(DriverNotSupported, match=r"parent dataset .* is not usable"):
        load_driver("zfs", tmp_path / "b", {"fsname": f"{zfs_pool[0]}/nosuchdataset"})


def test_check_lists_and_gc_removes_what_killed_creates_and_removals_left(driver: Driver) -> None:
    driver.create("base")
    driver.create("kept", "base")
    fsname = dict(driver.status())["Parent Dataset"]
    home = Path(driver.home)
    # Killed between snapshot and clone: a snapshot that no clone uses.
    run_command(["zfs", "snapshot", f"{fsname}/base@layerstore-clone-early"])
    # Killed between clone and the deferred destroy, the clone removed later: its origin snapshot stays.
    run_command(["zfs", "snapshot", f"{fsname}/base@layerstore-clone-late"])
    run_command(["zfs", "clone", "-o", "canmount=noauto", f"{fsname}/base@layerstore-clone-late", f"{fsname}/late"])
    run_command(["zfs", "unmount", "-f", f"{fsname}/late"], check=False)  # zfs-fuse mounts clones
    assert ZfsCommands().run_retrying_busy(["zfs", "destroy", f"{fsname}/late"]).returncode == 0
    # Killed during remove, after the destroy: the layer's empty mount directory.
    (home / "mnt" / "gone").mkdir()
    # A snapshot a user took inside a layer is the layer's own, not an orphan.
    run_command(["zfs", "snapshot", f"{fsname}/kept@users-own"])

    expected = {
        f"zfs snapshot {fsname}/base@layerstore-clone-early (no layer is cloned from it)",
        f"zfs snapshot {fsname}/base@layerstore-clone-late (no layer is cloned from it)",
        f"zfs mount directory {home / 'mnt' / 'gone'} (its dataset is gone)",
    }
    assert set(driver.orphans()) == expected
    assert set(driver.gc([])) == expected
    assert driver.orphans() == []
    snapshots = set(datasets(driver, "snapshot"))
    assert snapshots == {f"{fsname}/base@layerstore-clone-kept", f"{fsname}/kept@users-own"}
    assert not (home / "mnt" / "gone").exists()
    assert not (home / "mnt" / "gone").exists()
    driver.remove("kept")
    driver.remove("base")


def test_a_daemon_that_stops_answering_is_a_one_line_error(
    zfs_root: Path, tmp_path: Path, zfs_daemon: int | None
) -> None:
    if zfs_daemon is None:
        unavailable("zfs", "the zfs-fuse daemon was not started by the tests, so they may not stop it")
    fsname = dict(load_driver("zfs", zfs_root / "probe").status())["Parent Dataset"]
    # The home off the daemon's mounts: only the zfs command itself can wait on the stopped daemon.
    driver = ZfsDriver(tmp_path / "home", {"fsname": fsname}, IDMappings())
    driver.zfs.timeout = 1.0  # a stopped daemon never answers; any limit shows the error
    os.kill(zfs_daemon, signal.SIGSTOP)
    try:
        with pytest.raises(StorageError) as info:
            driver.exists("base")
    finally:
        os.kill(zfs_daemon, signal.SIGCONT)
    message = str(info.value)
    assert "\n" not in message
    assert "zfs list" in message and "zfs-fuse" in message and "restart it" in message
    # Going on again, the daemon answers the next command.
    driver.zfs.timeout = 300.0
    driver.create("base", None, CreateOpts())
    assert driver.exists("base")
    driver.remove("base")
