"""A completely full zfs pool: reading, mounting, check, rm and gc still work, so the user can free space."""

from __future__ import annotations

from pathlib import Path

from layerstore.testing.stress import full_filesystem_run
from layerstore.testing.zfsfuse import zfs_fuse_pool


def test_commands_on_a_full_pool(zfs_pool: tuple[str, Path], tmp_path: Path) -> None:
    # A pool of its own (the session's daemon serves it): filling the shared pool would starve other tests.
    with zfs_fuse_pool(tmp_path / "small", 64) as (_pool, mountpoint):
        problems = full_filesystem_run(mountpoint / "store", mountpoint / "filler", tmp_path)
    assert not problems, "\n".join(problems)
