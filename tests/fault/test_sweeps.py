"""A leftover that cannot be removed is a warning naming it; the command still succeeds."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import Store


def test_unremovable_leftover_warns_and_proceeds(store: Store) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    image = store.ok("import", "-", input=b"\0" * 1024).strip()
    leftover = store.root / "graph" / "_tmp" / f"{image}.del.0123456789abcdef"
    (leftover / "busy").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", leftover / "busy"], check=True)
    try:
        proc = store.run("ls")
        assert proc.returncode == 0, proc.stderr
        err = proc.stderr.decode()
        assert len(err.splitlines()) == 1 and err.startswith("layerstore: warning: "), err
        assert str(leftover) in err
        assert image[:12] in proc.stdout.decode()
    finally:
        subprocess.run(["umount", leftover / "busy"], check=True)
    assert store.run("ls").stderr == b""
    assert not leftover.exists()
