"""Fixtures for the command-line tests: the real `layerstore` executable with an isolated environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_helpers import LAYERSTORE, OUTPUT_LAYER, Run, fake_driver_site, ok


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment that sees no config file and no store of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
    env.update(
        LAYERSTORE_ROOT=str(tmp_path / "store"),
        LAYERSTORE_DRIVER="vfs",
        LAYERSTORE_RUNROOT=str(tmp_path / "run"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
    )
    return env


@pytest.fixture
def run(cli_env: dict[str, str]) -> Run:
    """Run ``layerstore ARGS`` (bytes or str args), returning the completed process (never raising)."""

    def _run(*args: str | os.PathLike[str], input: bytes | None = None, env: dict[str, str] | None = None,
             stdout: int | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [LAYERSTORE, *map(str, args)],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**cli_env, **(env or {})},
            check=False,
        )

    return _run


STRICT_DRIVER = """\
from pathlib import Path

from layerstore import hookimpl
from layerstore.errors import ConfigError


class StrictDriver:
    def __init__(self, home, options, id_maps):
        if options:
            raise ConfigError(f"strictdrv refuses options {sorted(options)}")
        self.home = Path(home)

    @hookimpl
    def create(self, id, parent, opts):
        (self.home / id).mkdir(parents=True)

    @hookimpl
    def remove(self, id):
        (self.home / id).rmdir()

    @hookimpl
    def get(self, id, mount_label):
        return str(self.home / id)

    @hookimpl
    def put(self, id):
        pass

    @hookimpl
    def exists(self, id):
        return (self.home / id).is_dir()
"""


@pytest.fixture
def strict_driver(tmp_path: Path) -> dict[str, str]:
    """A second installed driver ("strictdrv", found through its entry point) that refuses every option."""
    return fake_driver_site(tmp_path / "strict-site", "strictdrv", "layerstore_strictdrv", STRICT_DRIVER,
                            "StrictDriver")


@pytest.fixture
def output_layer(run: Run, tmp_path: Path) -> str:
    """The ID of `OUTPUT_LAYER`, imported into the test's store."""
    path = tmp_path / "layer.tar"
    path.write_bytes(OUTPUT_LAYER)
    return ok(run("import", path)).strip()
