"""The generic diff hooks, through the Driver facade of a plain directory-copy driver."""

from __future__ import annotations

import gc
import io
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, build_sample_tree, snapshot

from layerstore import CreateOpts, IDMappings, hookimpl, open_driver
from layerstore.drivers import Driver
from layerstore.errors import InvalidArchive, LayerNotFound


class CopyDriver:
    """Minimal full-copy driver (cp -a of the parent) used to drive the generic hooks."""

    def __init__(self, home: Path, options: Mapping[str, str], id_maps: IDMappings) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.mounted: dict[str, int] = {}

    def _dir(self, id: str) -> Path:
        return self.home / "layers" / id

    @hookimpl
    def create(self, id: str, parent: str | None, opts: CreateOpts) -> None:
        self._dir(id).parent.mkdir(exist_ok=True)
        if parent is None:
            self._dir(id).mkdir(0o755)
        else:
            subprocess.run(["cp", "-a", str(self._dir(parent)), str(self._dir(id))], check=True)

    @hookimpl
    def remove(self, id: str) -> None:
        shutil.rmtree(self._dir(id))

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        if not self._dir(id).is_dir():
            raise LayerNotFound(id)
        self.mounted[id] = self.mounted.get(id, 0) + 1
        return str(self._dir(id))

    @hookimpl
    def put(self, id: str) -> None:
        self.mounted.pop(id, None)

    @hookimpl
    def exists(self, id: str) -> bool:
        return self._dir(id).is_dir()


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    return open_driver("copy", CopyDriver, tmp_path / "home")


def _tar_of(src: Path) -> bytes:
    return subprocess.run(
        ["tar", "--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(src), "-cf", "-", "."],
        check=True,
        capture_output=True,
    ).stdout


def test_apply_diff_changes_diff_and_diff_size(driver: Driver, tmp_path: Path) -> None:
    src = build_sample_tree(tmp_path / "src")
    driver.create("base")
    size = driver.apply_diff("base", None, io.BytesIO(_tar_of(src)))
    assert size == driver.diff_size("base") > 3 * 1024 * 1024
    assert driver.references("base") == 0
    changes = driver.changes("base")
    assert [str(c) for c in changes][:3] == ["A /abs-link", "A /bin", "A /bin/ping"]

    driver.create("child", "base")
    delta = TarBuilder().add("etc/.wh.passwd").add("etc/hosts", data=b"127.0.0.1 localhost\n").add("usr/.wh.lib")
    assert driver.apply_diff("child", "base", delta.stream()) == 20
    assert driver.diff_size("child", "base") == 20
    assert [str(c) for c in driver.changes("child", "base")] == [
        "C /etc",
        "A /etc/hosts",
        "D /etc/passwd",
        "C /usr",
        "D /usr/lib",
    ]
    with driver.diff("child", "base") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        names = [m.name for m in tar]
    assert names == ["etc", "etc/hosts", "etc/.wh.passwd", "usr", "usr/.wh.lib"]
    assert driver.references("child") == 0

    # a diff applies on another layer with the same result
    driver.create("copy", "base")
    with driver.diff("child", "base") as stream:
        driver.apply_diff("copy", "base", stream)
    with driver.mounted("copy") as a, driver.mounted("child") as b:
        assert snapshot(Path(a)) == snapshot(Path(b))


def test_diff_stream_releases_the_layer_when_closed_or_collected(driver: Driver) -> None:
    driver.create("l")
    driver.apply_diff("l", None, TarBuilder().add("f", data=b"x").stream())
    stream = driver.diff("l")
    assert driver.references("l") == 1
    stream.close()
    assert driver.references("l") == 0
    stream = driver.diff("l")
    assert driver.references("l") == 1
    del stream
    gc.collect()
    assert driver.references("l") == 0


def test_failed_apply_removes_the_layer_and_writes_nothing_outside(driver: Driver, tmp_path: Path) -> None:
    driver.create("l")
    evil = TarBuilder().add("ok", data=b"1").add("../../escape", data=b"x")
    with pytest.raises(InvalidArchive, match="escape"):
        driver.apply_diff("l", None, evil.stream())
    assert not driver.exists("l")
    assert not any(p.name == "escape" for p in tmp_path.rglob("escape"))
    assert driver.references("l") == 0


def test_naive_diff_wraps_the_bare_plugin_one_way(tmp_path: Path) -> None:
    """Without a facade, the generic hooks pair every get of the bare plugin with a put: nothing stays mounted."""
    from layerstore.naivediff import NaiveDiff

    plugin = CopyDriver(tmp_path / "home", {}, IDMappings())
    naive = NaiveDiff(plugin, IDMappings())
    plugin.create("base", None, CreateOpts())
    assert naive.apply_diff("base", None, TarBuilder().add("f", data=b"x").stream()) == 1
    plugin.create("child", "base", CreateOpts())
    assert naive.apply_diff("child", "base", TarBuilder().add("g", data=b"yy").stream()) == 2
    assert [str(c) for c in naive.changes("child", "base")] == ["A /g"]
    assert naive.diff_size("child", "base") == 2
    with naive.diff("child", "base") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        assert [m.name for m in tar] == ["g"]
    assert plugin.mounted == {}
    assert not (tmp_path / "home" / ".layerstore").exists()  # no reference files, no facade records


def test_facade_holds_the_layers_the_fallback_mounts(driver: Driver) -> None:
    """The fallback's own put never unmounts a layer another holder has; the facade's release does, at the end."""
    plugin = driver.plugin
    assert isinstance(plugin, CopyDriver)
    driver.create("l")
    driver.apply_diff("l", None, TarBuilder().add("f", data=b"x").stream())
    driver.get("l")
    assert driver.changes("l") and driver.diff_size("l") == 1
    with driver.diff("l") as stream:
        stream.read()
    assert "l" in plugin.mounted, "the generic hooks unmounted a layer this process holds"
    assert driver.references("l") == 1
    driver.put("l")
    assert "l" not in plugin.mounted
    with pytest.raises(LayerNotFound, match="missing"):
        driver.changes("l", "missing")
    assert driver.references("l") == 0 and "l" not in plugin.mounted
