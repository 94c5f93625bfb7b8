"""Many layerstore commands at once on one zfs store: none fails because of another, none changes driver."""

from __future__ import annotations

import os
from pathlib import Path

from layerstore.testing.stress import concurrency_run

ROUNDS = int(os.environ.get("LAYERSTORE_STRESS_ROUNDS", "2"))


def test_concurrent_commands_with_automatic_selection(zfs_root: Path, tmp_path: Path) -> None:
    problems = concurrency_run(zfs_root / "store", tmp_path, "zfs", workers=8, rounds=ROUNDS)
    assert not problems, "\n".join(problems)
