"""Configuration that Podman and Docker users bring: storage.conf, daemon.json, scoped -o, STORAGE_* variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import Run, assert_one_line_error, make_tar, ok

from layerstore.config import default_runroot, load_config_file, resolve_settings
from layerstore.errors import ConfigError

# Written as containers-storage.conf(5) documents it (and as Debian's default file is), for our vfs driver.
STORAGE_CONF = """\
# storage.conf
[storage]
driver = "vfs"
runroot = "{runroot}"
graphroot = "{graphroot}"
# rootless_storage_path = "$HOME/.local/share/containers/storage"

[storage.options]
additionalimagestores = [
]
pull_options = {{enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}}
remap-uids = ""
remap-gids = ""

[storage.options.overlay]
mountopt = "nodev"
mount_program = "/usr/bin/fuse-overlayfs"

[storage.options.vfs]
copy = "read"

[storage.options.thinpool]
# autoextend_percent = "20"
"""

# Written as dockerd(8) documents daemon.json; keys about other parts of the daemon are left alone.
DAEMON_JSON = {
    "data-root": "{graphroot}",
    "exec-root": "{runroot}",
    "storage-driver": "vfs",
    "storage-opts": ["vfs.copy=read", "overlay2.mountopt=nodev"],
    "log-driver": "json-file",
    "registry-mirrors": [],
}


def _config(tmp_path: Path, kind: str, copy: str = "read") -> Path:
    graphroot, runroot = tmp_path / "graph-root", tmp_path / "run-root"
    if kind == "storage.conf":
        text = STORAGE_CONF.format(graphroot=graphroot, runroot=runroot).replace('copy = "read"', f'copy = "{copy}"')
    else:
        data = {**DAEMON_JSON, "data-root": str(graphroot), "exec-root": str(runroot),
                "storage-opts": [f"vfs.copy={copy}", "overlay2.mountopt=nodev"]}
        text = json.dumps(data, indent=2)
    path = tmp_path / f"{copy}-{kind}"
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", ["storage.conf", "daemon.json"])
def test_foreign_config_selects_driver_root_runroot_and_options(run: Run, tmp_path: Path, kind: str) -> None:
    config = _config(tmp_path, kind)
    env = {"LAYERSTORE_ROOT": "", "LAYERSTORE_DRIVER": "", "LAYERSTORE_RUNROOT": ""}
    layer = tmp_path / "a.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    image_id = ok(run("--config", config, "import", layer, env=env)).strip()
    info = json.loads(ok(run("--config", config, "info", "--json", env=env)))
    assert info["root"] == str(tmp_path / "graph-root") and info["runroot"] == str(tmp_path / "run-root")
    assert info["driver"] == "vfs" and info["driver_source"] == f"config file {config}"
    assert info["config_file"] == str(config)
    assert (tmp_path / "graph-root" / "graph" / image_id / "json").is_file()
    settings = resolve_settings(config=config, environ={})
    assert settings.options_for("vfs") == {"copy": "read"}
    assert settings.options_for("overlay", selected=False) == (
        {"mountopt": "nodev", "mount_program": "/usr/bin/fuse-overlayfs"} if kind == "storage.conf"
        else {"mountopt": "nodev"}
    )
    # The option reaches the driver: a value vfs does not know is refused, naming it.
    assert_one_line_error(run("--config", _config(tmp_path, kind, "bogus"), "import", layer, env=env), "bogus")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("storage.conf", '[storage]\ndriver = "vfs"\nimagestore = "/srv/images"\n', "storage.imagestore"),
        ("storage.conf", '[storage]\n[storage.options]\nadditionalimagestores = ["/x"]\n',
         "storage.options.additionalimagestores"),
        ("storage.conf", '[storage]\n[storage.options.thinpool]\nautoextend_percent = "20"\n', "thinpool"),
        ("storage.conf", '[storage]\n[other]\nx = 1\n', "other"),
        ("storage.conf", '[storage]\n[storage.options]\nremap-uids = "0:1"\n', "remap-uids"),
        ("daemon.json", '{"storage-driver": "vfs", "userns-remap": "default"}', "userns-remap"),
        ("daemon.json", '{"storage-opts": ["dm.basesize=20G"]}', "dm.basesize"),
        ("daemon.json", '{"storage-opts": "overlay2.size=1G"}', "storage-opts"),
        ("daemon.json", '{"data-root": 5}', "data-root"),
        ("daemon.json", '{"storage-driver": "vfs",', "not valid JSON"),
    ],
)
def test_foreign_config_without_equivalent_is_one_line(run: Run, tmp_path: Path, name: str, text: str,
                                                       expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    assert_one_line_error(run("--config", path, "ls"), expected)


def test_storage_conf_id_maps(tmp_path: Path) -> None:
    path = tmp_path / "storage.conf"
    path.write_text('[storage]\n[storage.options]\nremap-uids = "0:100000:65536"\nremap-gids = "0:200000:65536"\n')
    maps = resolve_settings(config=path, environ={}).id_maps
    assert (maps.uids[0].host_id, maps.gids[0].host_id) == (100000, 200000)


def test_scoped_options(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[drivers.vfs]\ncopy = "read"\n')
    s = resolve_settings(config=config, options=["vfs.copy=sendfile", "overlay.mountopt=nodev,noexec", "size=1G"],
                         environ={"STORAGE_OPTS": "vfs.copy=copy_file_range,overlay2.mount_api=mount"})
    assert s.options_for("vfs") == {"copy": "sendfile", "size": "1G"}
    assert s.options_for("vfs", selected=False) == {"copy": "sendfile"}
    assert s.options_for("overlay", selected=False) == {"mountopt": "nodev,noexec", "mount_api": "mount"}
    s = resolve_settings(config=config, environ={"STORAGE_OPTS": "vfs.copy=copy_file_range"})
    assert s.options_for("vfs") == {"copy": "copy_file_range"}  # STORAGE_OPTS over the file, below -o


def test_scoped_option_through_the_cli(run: Run, tmp_path: Path) -> None:
    layer = tmp_path / "a.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    ok(run("-o", "vfs.copy=read", "import", layer))
    ok(run("--storage-opt", "vfs.copy=read", "ls"))
    assert_one_line_error(run("-o", "vfs.copy=bogus", "ls"), "bogus")  # the store exists: the driver opens
    assert_one_line_error(run("-o", "nosuchdrv.x=1", "ls"), "nosuchdrv", "installed drivers", "vfs")
    assert_one_line_error(run("-o", "vfs.=1", "ls"), "vfs.=1", "driver.key=value")


def test_unscoped_options_apply_to_the_selected_driver_only(run: Run, strict_driver: dict[str, str]) -> None:
    rows = {r["name"]: r for r in json.loads(ok(run("-o", "copy=read", "drivers", "--json", env=strict_driver)))}
    assert rows["vfs"]["selected"] and rows["vfs"]["supported"], rows
    assert rows["strictdrv"]["supported"], rows  # the vfs option is not handed to the other driver
    rows = {r["name"]: r for r in json.loads(ok(run("-o", "strictdrv.x=1", "drivers", "--json", env=strict_driver)))}
    assert not rows["strictdrv"]["supported"] and "refuses options ['x']" in rows["strictdrv"]["reason"]


def test_storage_environment_variables_rank_after_ours(run: Run, tmp_path: Path) -> None:
    info = json.loads(ok(run("info", "--json", env={"STORAGE_DRIVER": "nosuch"})))
    assert info["driver"] == "vfs" and info["driver_source"] == "LAYERSTORE_DRIVER"
    env = {"LAYERSTORE_DRIVER": "", "STORAGE_DRIVER": "vfs"}
    info = json.loads(ok(run("info", "--json", env=env)))
    assert info["driver"] == "vfs" and info["driver_source"] == "STORAGE_DRIVER"
    assert_one_line_error(run("ls", env={"LAYERSTORE_DRIVER": "", "STORAGE_DRIVER": "nosuch"}), "nosuch")
    layer = tmp_path / "a.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    assert_one_line_error(run("import", layer, env={"STORAGE_OPTS": "vfs.copy=bogus"}), "bogus")
    config = tmp_path / "c.toml"
    config.write_text('driver = "nosuch"\n')
    info = json.loads(ok(run("--config", config, "info", "--json", env=env)))
    assert info["driver_source"] == "STORAGE_DRIVER"  # the variable is above the config file


def test_unknown_driver_table_is_an_error(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[drivers.vsf]\ncopy = "read"\n')
    assert_one_line_error(run("--config", config, "ls"), "[drivers.vsf]", "installed drivers", "vfs")
    assert_one_line_error(run("--config", config, "drivers"), "[drivers.vsf]")


def test_runroot_defaults() -> None:
    assert default_runroot({}, euid=0) == Path("/run/layerstore")
    assert default_runroot({"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000) == Path("/run/user/1000/layerstore")
    assert default_runroot({}, euid=1000) == Path("/tmp/layerstore-1000")
    assert resolve_settings(environ={"LAYERSTORE_RUNROOT": "/x/run"}).runroot == Path("/x/run")


def test_config_docstring_example_is_accepted(tmp_path: Path) -> None:
    import layerstore.config

    doc = layerstore.config.__doc__ or ""
    lines = []
    for line in doc.split("Our file is TOML::", 1)[1].splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line.strip())
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    parsed = load_config_file(path)
    assert parsed.driver == "overlay" and dict(parsed.drivers["overlay"]) == {"mountopt": "nodev"}
