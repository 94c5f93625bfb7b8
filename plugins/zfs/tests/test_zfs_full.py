"""A completely full zfs pool: reading, mounting, check, rm and gc still work, so the user can free space."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore.testing.stress import full_filesystem_run
from layerstore.testing.zfsfuse import zfs_fuse_pool


# The core's part (references that need no new file, check's "could not verify", rm without a new
# directory) is issue 17's work on another branch; strict once it is merged.
@pytest.mark.xfail(reason="core reference counts and check still need space on a full pool", strict=False)
def test_commands_on_a_full_pool(zfs_pool: tuple[str, Path], tmp_path: Path) -> None:
    # A pool of its own (the session's daemon serves it): filling the shared pool would starve other tests.
    with zfs_fuse_pool(tmp_path / "small", 64) as (_pool, mountpoint):
        problems = full_filesystem_run(mountpoint / "store", mountpoint / "filler", tmp_path)
    assert not problems, "\n".join(problems)
