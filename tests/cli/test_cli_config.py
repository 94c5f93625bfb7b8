"""Settings resolution: flags, environment, config file, defaults; driver selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore.config import (
    auto_candidates,
    default_root,
    load_config_file,
    open_driver_for,
    parse_options,
    resolve_settings,
)
from layerstore.errors import ConfigError, DriverNotFound
from layerstore.idtools import IDMap


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), **extra}


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg" / "layerstore" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_driver_name_order(tmp_path: Path) -> None:
    _write_config(tmp_path, 'driver = "from-file"\nroot = "/srv/ls"\n')
    env = _env(tmp_path, LAYERSTORE_DRIVER="from-env")
    assert resolve_settings(driver="from-flag", environ=env).driver == "from-flag"
    s = resolve_settings(environ=env)
    assert (s.driver, s.driver_source) == ("from-env", "LAYERSTORE_DRIVER")
    s = resolve_settings(environ=_env(tmp_path))
    assert s.driver == "from-file" and "config file" in s.driver_source
    (tmp_path / "cfg" / "layerstore" / "config.toml").unlink()
    s = resolve_settings(environ=_env(tmp_path))
    assert (s.driver, s.driver_source) == (None, "auto")


def test_root_order_and_defaults(tmp_path: Path) -> None:
    _write_config(tmp_path, 'root = "/srv/from-file"\n')
    env = _env(tmp_path, LAYERSTORE_ROOT="/srv/from-env")
    assert resolve_settings(root="/srv/flag", environ=env).root == Path("/srv/flag")
    assert resolve_settings(environ=env).root == Path("/srv/from-env")
    assert resolve_settings(environ=_env(tmp_path)).root == Path("/srv/from-file")
    assert default_root({}, euid=0) == Path("/var/lib/layerstore")
    assert default_root({"XDG_DATA_HOME": "/x/data"}, euid=1000) == Path("/x/data/layerstore")
    assert default_root({"HOME": "/home/u"}, euid=1000) == Path("/home/u/.local/share/layerstore")


def test_config_file_search_order(tmp_path: Path) -> None:
    default = _write_config(tmp_path, 'driver = "default"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('driver = "explicit"\n')
    env_file = tmp_path / "env.toml"
    env_file.write_text('driver = "env"\n')
    env = _env(tmp_path, LAYERSTORE_CONFIG=str(env_file))
    assert resolve_settings(config=explicit, environ=env).driver == "explicit"
    assert resolve_settings(environ=env).driver == "env"
    assert resolve_settings(environ=_env(tmp_path)).config.path == default


def test_options_and_maps(tmp_path: Path) -> None:
    _write_config(
        tmp_path,
        'driver = "vfs"\nuid_maps = "0:100000:65536"\ngid_maps = ["0:200000:1000", "1000:300000:10"]\n'
        '[drivers.vfs]\ncopy = "reflink"\nsize = 10\nflag = true\n[drivers.other]\nz = "1"\n',
    )
    s = resolve_settings(options=["size=20G", "extra=a=b"], environ=_env(tmp_path))
    assert s.options_for("vfs") == {"copy": "reflink", "size": "20G", "flag": "true", "extra": "a=b"}
    assert s.id_maps.uids == (IDMap(0, 100000, 65536),)
    assert s.id_maps.gids == (IDMap(0, 200000, 1000), IDMap(1000, 300000, 10))
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["=x"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("driver = \n", "line 1"),
        ('driver = "vfs"\nbogus = 1\n', "bogus"),
        ('uid_maps = "0:1"\n', "uid_maps"),
        ("drivers = 3\n", "drivers"),
        ("[drivers.vfs]\nx = [1]\n", "drivers.vfs.x"),
        ("driver = 5\n", "driver"),
    ],
)
def test_bad_config_is_one_line_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_auto_candidates_prefer_the_store_driver(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert auto_candidates(root, ["vfs", "overlay"])[:2] == ["overlay", "vfs"]
    (root / "vfs" / "dir").mkdir(parents=True)
    assert auto_candidates(root, ["vfs", "overlay"])[0] == "vfs"


def test_named_driver_not_found(tmp_path: Path) -> None:
    s = resolve_settings(root=tmp_path / "store", driver="nosuch", environ=_env(tmp_path))
    with pytest.raises(DriverNotFound, match="nosuch"):
        open_driver_for(s)
    assert not (tmp_path / "store").exists()  # a failed selection leaves no directories


def test_auto_selection_opens_a_driver(tmp_path: Path) -> None:
    s = resolve_settings(root=tmp_path / "store", environ=_env(tmp_path))
    driver = open_driver_for(s)
    try:
        assert driver.name in ("overlay", "vfs")
        assert driver.home == tmp_path / "store" / driver.name
    finally:
        driver.cleanup()
