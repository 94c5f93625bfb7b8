"""`layerstore import --storage-opt size=...` on zfs: a dataset quota the layer cannot grow past."""

from __future__ import annotations

from pathlib import Path

from layerstore.testing.quota import check_import_quota


def test_import_storage_opt_size_is_a_quota(zfs_root: Path, tmp_path: Path) -> None:
    check_import_quota("zfs", zfs_root / "store", tmp_path)
