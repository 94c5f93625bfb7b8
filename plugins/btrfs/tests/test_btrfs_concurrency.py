"""Many layerstore commands at once on one btrfs store: none fails because of another, none changes driver."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from layerstore.testing.stress import concurrency_run

WORKERS = 8
ROUNDS = int(os.environ.get("LAYERSTORE_STRESS_ROUNDS", "3"))


def test_concurrent_commands_with_automatic_selection(btrfs_mount: Path, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(dir=btrfs_mount)) / "store"
    problems = concurrency_run(root, tmp_path, "btrfs", workers=WORKERS, rounds=ROUNDS)
    assert not problems, "\n".join(problems)


_OPENER = """
import sys
from layerstore import load_driver
from layerstore.errors import LayerStoreError
home, rounds, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
failures = 0
for i in range(rounds):
    try:
        driver = load_driver("btrfs", home)
        if mode == "writer":
            layer = f"w{sys.argv[4]}-{i}"
            driver.create(layer)
            driver.remove(layer)
        driver.cleanup()
    except LayerStoreError as exc:
        failures += 1
        print(type(exc).__name__, exc, file=sys.stderr)
sys.exit(1 if failures else 0)
"""


def test_opening_a_store_is_safe_while_others_create_and_remove(btrfs_home: Path) -> None:
    import subprocess
    import sys

    from layerstore import load_driver

    load_driver("btrfs", btrfs_home).cleanup()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(btrfs_home), str(ROUNDS * 15), "writer" if i < 3 else "reader", str(i)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e for e in errors if e)
    assert not list((btrfs_home / "staging").iterdir())
    assert not list((btrfs_home / "trash").iterdir())
