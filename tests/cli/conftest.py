"""Fixtures for the command-line tests: the real `layerstore` executable with an isolated environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_helpers import LAYERSTORE, Run


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
