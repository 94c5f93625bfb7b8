"""Layers come and go: empty and base layers, IDs that exist or not, status and metadata."""

from __future__ import annotations

import io
import os
import stat

import pytest

from layerstore.capabilities import CreateOpts
from layerstore.drivers import Driver
from layerstore.errors import LayerExists, LayerNotFound, LayerStoreError

from ._base import expect_missing
from ._support import MTIME, Mode, file_digest, new_id, sha256
from ._tars import TarBuilder, diff_members


class LayerTests:
    """Creating layers and the errors around it (docs/driver-guide.md)."""

    def test_empty_base_layer(self, driver: Driver) -> None:
        layer = new_id()
        assert not driver.exists(layer)
        driver.create(layer)
        assert driver.exists(layer)
        with driver.mounted(layer) as path:
            st = os.lstat(path)
            assert stat.S_ISDIR(st.st_mode)
            mode = stat.S_IMODE(st.st_mode)
            assert mode == 0o755, f"root of a new base layer has mode {mode:o}, not 755"
            assert (st.st_uid, st.st_gid) == driver.id_maps.root_pair
            assert os.listdir(path) == []
        assert driver.changes(layer) == []
        assert driver.diff_size(layer) == 0
        assert diff_members(driver, layer, None) == []

    def test_base_layer_from_tar(self, driver: Driver) -> None:
        tar = (
            TarBuilder()
            .dir("etc", mode=0o751)
            .file("etc/hostname", b"box\n", mode=0o644, uid=3, gid=4)
            .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .file("implied/parent/file", b"no entries for my directories\n", mode=0o600)
        )
        data = tar.bytes()
        layer = new_id()
        driver.create(layer)
        assert driver.apply_diff(layer, None, io.BytesIO(data)) == tar.regular_bytes
        with driver.mounted(layer) as path:
            st = os.lstat(os.path.join(path, "etc"))
            assert stat.S_ISDIR(st.st_mode), "etc is not a directory"
            assert Mode(stat.S_IMODE(st.st_mode)) == Mode(0o751)
            st = os.lstat(os.path.join(path, "etc/hostname"))
            assert stat.S_ISREG(st.st_mode), "etc/hostname is not a regular file"
            assert Mode(stat.S_IMODE(st.st_mode)) == Mode(0o644)
            assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (3, 4, MTIME)
            assert file_digest(os.path.join(path, "etc/hostname")) == sha256(b"box\n")
            assert os.readlink(os.path.join(path, "etc/localtime")) == "/usr/share/zoneinfo/UTC"
            for implied in ("implied", "implied/parent"):
                st = os.lstat(os.path.join(path, implied))
                assert stat.S_ISDIR(st.st_mode), f"{implied} was not created"
                mode = stat.S_IMODE(st.st_mode)
                assert mode == 0o755, f"implied directory {implied} has mode {mode:o}, not 755"
                assert (st.st_uid, st.st_gid) == driver.id_maps.root_pair
            assert sorted(os.listdir(path)) == ["etc", "implied"]

    def test_create_existing_layer_raises_layer_exists(self, driver: Driver) -> None:
        layer = new_id()
        driver.create(layer)
        with driver.mounted(layer) as path, open(os.path.join(path, "keep"), "wb") as f:
            f.write(b"still here")
        with pytest.raises(LayerExists):
            driver.create(layer)
        with driver.mounted(layer) as path:
            assert os.listdir(path) == ["keep"], "a failed create changed the existing layer"

    def test_create_on_missing_parent_raises_layer_not_found(self, driver: Driver) -> None:
        layer = new_id()
        with pytest.raises(LayerNotFound):
            driver.create(layer, new_id())
        assert not driver.exists(layer)

    def test_missing_layer(self, driver: Driver) -> None:
        missing = new_id()
        assert driver.exists(missing) is False
        expect_missing(lambda: driver.get(missing), "get")
        expect_missing(lambda: driver.remove(missing), "remove")
        expect_missing(lambda: driver.metadata(missing), "metadata")
        expect_missing(lambda: driver.diff(missing), "diff")
        expect_missing(lambda: driver.changes(missing), "changes")
        assert driver.references(missing) == 0

    def test_unknown_storage_option_is_refused(self, driver: Driver) -> None:
        layer = new_id()
        with pytest.raises(LayerStoreError) as info:
            driver.create(layer, None, CreateOpts(storage_opts={"layerstore-conformance-bogus": "1"}))
        assert "layerstore-conformance-bogus" in str(info.value), "the error does not name the unknown option"
        assert not driver.exists(layer)

    def test_status_and_metadata_are_strings(self, driver: Driver) -> None:
        layer = new_id()
        driver.create(layer)
        status = driver.status()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in status)
        metadata = driver.metadata(layer)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
