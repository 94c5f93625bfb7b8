"""A completely full btrfs: reading, mounting, check, rm and gc still work, so the user can free space."""

from __future__ import annotations

from pathlib import Path

from layerstore.testing.stress import full_filesystem_run


def test_commands_on_a_full_filesystem(small_btrfs: Path, tmp_path: Path) -> None:
    problems = full_filesystem_run(small_btrfs / "store", small_btrfs / "filler", tmp_path)
    assert not problems, "\n".join(problems)
