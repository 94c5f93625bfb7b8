"""A completely full btrfs: reading, mounting, check, rm and gc still work, so the user can free space."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerstore.testing.stress import full_filesystem_run


# The core's part (references that need no new file, check's "could not verify", rm without a new
# directory) is issue 17's work on another branch; strict once it is merged.
@pytest.mark.xfail(reason="core reference counts and check still need space on a full filesystem", strict=False)
def test_commands_on_a_full_filesystem(small_btrfs: Path, tmp_path: Path) -> None:
    problems = full_filesystem_run(small_btrfs / "store", small_btrfs / "filler", tmp_path)
    assert not problems, "\n".join(problems)
