"""`layerstore import --storage-opt size=...` on btrfs: a qgroup limit the layer cannot grow past."""

from __future__ import annotations

from pathlib import Path

from layerstore.testing.quota import check_import_quota


def test_import_storage_opt_size_is_a_quota(small_btrfs: Path, tmp_path: Path) -> None:
    check_import_quota("btrfs", small_btrfs / "store", tmp_path)
