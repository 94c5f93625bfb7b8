"""Driver discovery: one distribution per driver name, and a hook API version the core checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerstore import discovery, hookimpl
from layerstore.drivers import available_drivers, open_driver
from layerstore.errors import InvalidDriver
from layerstore.hookspecs import HOOK_API_VERSION


def _dist_info(site: Path, dist: str, driver: str, target: str) -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[layerstore.drivers]\n{driver} = {target}\n")


def test_duplicate_driver_name_names_both_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    _dist_info(site, "acme-layerstore-vfs", "vfs", "acme_vfs:Driver")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(InvalidDriver) as info:
        available_drivers()
    message = str(info.value)
    assert "'vfs'" in message and "acme-layerstore-vfs" in message and "layerstore-vfs" in message
    assert "uninstall one" in message


def test_a_driver_on_a_new_search_path_is_found_after_a_scan(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert "acme" not in discovery.driver_entry_points()  # scanned and kept for this sys.path
    site = tmp_path / "site"
    _dist_info(site, "acme-layerstore-acme", "acme", "acme_mod:Driver")
    monkeypatch.syspath_prepend(str(site))
    assert discovery.driver_entry_points()["acme"].value == "acme_mod:Driver"
    monkeypatch.undo()
    assert "acme" not in discovery.installed_driver_names()


class _Plugin:
    def __init__(self, home: Path, options: object, id_maps: object) -> None:
        self.home = home

    @hookimpl
    def create(self, id: str, parent: str | None, opts: object) -> None: ...

    @hookimpl
    def remove(self, id: str) -> None: ...

    @hookimpl
    def get(self, id: str, mount_label: str) -> str:
        return str(self.home)

    @hookimpl
    def put(self, id: str) -> None: ...

    @hookimpl
    def exists(self, id: str) -> bool:
        return False


def test_hook_api_version_is_checked(tmp_path: Path) -> None:
    assert HOOK_API_VERSION == 1
    open_driver("undeclared", _Plugin, tmp_path).cleanup()  # no declaration: written for version 1

    class Current(_Plugin):
        hook_api_version = HOOK_API_VERSION

    open_driver("current", Current, tmp_path).cleanup()

    class Future(_Plugin):
        hook_api_version = HOOK_API_VERSION + 1

    with pytest.raises(InvalidDriver, match=r"'future' is written for hook API version 2.*provides version 1"):
        open_driver("future", Future, tmp_path)


def test_shipped_drivers_declare_the_hook_api() -> None:
    for name, ep in discovery.driver_entry_points().items():
        if ep.dist is not None and ep.dist.name.startswith("layerstore-"):
            assert ep.load().hook_api_version == HOOK_API_VERSION, name


def _as_tuples(entry_points: object) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, ep.dist.name) for ep in entry_points]  # type: ignore[attr-defined]


def test_the_dist_info_scan_finds_what_importlib_metadata_finds(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib_metadata

    site = tmp_path / "site"
    _dist_info(site, "acme-layerstore-acme", "acme", "acme_mod:Driver")
    (site / "acme_mod.py").write_text("class Driver:\n    pass\n")
    monkeypatch.syspath_prepend(str(site))
    own = discovery._dist_info_entry_points()
    assert own is not None
    expected = importlib_metadata.entry_points(group=discovery.ENTRY_POINT_GROUP)
    assert _as_tuples(own) == _as_tuples(expected)
    assert {"acme", "vfs"} <= {ep.name for ep in own}  # the installed vfs plugin too (every test env has it)
    acme = next(ep for ep in own if ep.name == "acme")
    assert acme.load().__name__ == "Driver"


@pytest.mark.parametrize("unusual", ["egg-info", "duplicate", "no-metadata", "no-equals"])
def test_the_dist_info_scan_leaves_unusual_layouts_to_importlib_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unusual: str) -> None:
    site = tmp_path / "site"
    _dist_info(site, "acme-layerstore-acme", "acme", "acme_mod:Driver")
    info = site / "acme_layerstore_acme-1.0.dist-info"
    if unusual == "egg-info":
        (site / "other-1.0.egg-info").mkdir()
    elif unusual == "duplicate":
        (site / "acme.layerstore_acme-2.0.dist-info").mkdir()
    elif unusual == "no-metadata":
        (info / "METADATA").unlink()
    else:
        (info / "entry_points.txt").write_text("[console_scripts]\nbroken\n")
    monkeypatch.syspath_prepend(str(site))
    assert discovery._dist_info_entry_points() is None
    if unusual in ("egg-info", "no-metadata"):
        assert discovery.driver_entry_points()["acme"].value == "acme_mod:Driver"


def test_a_malformed_entry_point_fails_as_importlib_metadata_says(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib_metadata

    site = tmp_path / "site"
    _dist_info(site, "acme-layerstore-acme", "acme", "acme mod!")
    monkeypatch.syspath_prepend(str(site))
    ours = discovery.driver_entry_points()["acme"]
    theirs = importlib_metadata.EntryPoint("acme", "acme mod!", discovery.ENTRY_POINT_GROUP)
    with pytest.raises(Exception) as expected:
        theirs.load()
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        ours.load()
