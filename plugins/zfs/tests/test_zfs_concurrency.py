"""Many layerstore commands at once on one zfs store: none fails because of another, none changes driver."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from layerstore.testing.stress import cli, cli_env, concurrent_commands

WORKERS = 8
ROUNDS = int(os.environ.get("LAYERSTORE_STRESS_ROUNDS", "2"))


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def test_concurrent_commands_with_automatic_selection(zfs_root: Path, tmp_path: Path) -> None:
    root = zfs_root / "store"
    env = cli_env(tmp_path / "config")
    base = write_tar(tmp_path / "base.tar", {f"etc/f{i}": b"base %d\n" % i for i in range(20)})
    child = write_tar(tmp_path / "child.tar", {"etc/f1": b"changed\n", "app": b"app\n"})
    proc = cli(root, ["import", str(base)], env)
    assert proc.returncode == 0, proc.stderr
    base_id = proc.stdout.strip()
    assert (root / "zfs").is_dir(), "automatic selection on zfs did not pick zfs"

    problems, commands = concurrent_commands(root, base_id, child, env, driver="zfs", workers=WORKERS, rounds=ROUNDS)

    assert not problems, f"{len(problems)} problems in {commands} commands:\n" + "\n".join(problems)
    proc = cli(root, ["check"], env)
    assert proc.returncode == 0 and "orphan" not in proc.stdout, proc.stdout + proc.stderr
    proc = cli(root, ["rm", base_id], env)
    assert proc.returncode == 0, proc.stderr
