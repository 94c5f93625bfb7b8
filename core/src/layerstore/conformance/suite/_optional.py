"""Tests of optional capabilities: ID maps, quotas, read-only layers, native diffs.

Each is marked ``layerstore_requires(...)`` and skips, naming the capability
and the driver, when the driver does not declare it.
"""

from __future__ import annotations

import errno
import io
import os
import stat

import pytest

from layerstore.capabilities import CreateOpts
from layerstore.change import ChangeKind
from layerstore.drivers import Driver
from layerstore.idtools import IDMap, IDMappings

from ._base import MakeDriver
from ._support import Mode, build_layer, new_id
from ._tars import Member, TarBuilder, diff_members, hidden_by_diff

_UID_BASE, _GID_BASE = 100_000, 200_000
ID_MAPS = IDMappings(uids=(IDMap(0, _UID_BASE, 65536),), gids=(IDMap(0, _GID_BASE, 65536),))
"""The ID maps of the ownership test: container 0..65535 is host 100000.. (uids) and 200000.. (gids)."""

QUOTA = "8M"
QUOTA_BYTES = 8 << 20


class OptionalTests:
    """Capabilities a driver may declare."""

    @pytest.mark.layerstore_requires("idmap", "root")
    def test_ownership_under_id_maps(self, driver: Driver, make_driver: MakeDriver) -> None:
        mapped = make_driver(id_maps=ID_MAPS)
        base = new_id()
        mapped.create(base)
        tar = (
            TarBuilder()
            .file("rootfile", b"root\n")
            .file("implied/user-file", b"user\n", uid=1000, gid=50)
            .dir("owned-dir", uid=5, gid=6)
        )
        mapped.apply_diff(base, None, io.BytesIO(tar.bytes()))
        host_root = (_UID_BASE, _GID_BASE)
        with mapped.mounted(base) as path:

            def owner(rel: str) -> tuple[int, int]:
                st = os.lstat(os.path.join(path, rel))
                return st.st_uid, st.st_gid

            assert owner(".") == host_root, "the root of a new layer is not owned by the remapped root"
            assert Mode(stat.S_IMODE(os.lstat(path).st_mode)) == Mode(0o755)
            assert owner("rootfile") == host_root
            assert owner("implied") == host_root, "an implied directory is not owned by the remapped root"
            assert owner("implied/user-file") == (_UID_BASE + 1000, _GID_BASE + 50)
            assert owner("owned-dir") == (_UID_BASE + 5, _GID_BASE + 6)
        members = {m.name: (m.uid, m.gid) for m in diff_members(mapped, base, None)}
        assert members["rootfile"] == (0, 0), "diff does not map owners back to container IDs"
        assert members["implied/user-file"] == (1000, 50)
        assert members["owned-dir"] == (5, 6)

        child = new_id()
        mapped.create(child, base)
        with mapped.mounted(child) as path:
            assert os.lstat(os.path.join(path, "implied/user-file")).st_uid == _UID_BASE + 1000
            new = os.path.join(path, "written-in-container")
            with open(new, "wb") as f:
                f.write(b"x")
            os.chown(new, _UID_BASE + 7, _GID_BASE + 8)
        members = {m.name: (m.uid, m.gid) for m in diff_members(mapped, child, base)}
        assert members["written-in-container"] == (7, 8)

    @pytest.mark.layerstore_requires("quota")
    def test_quota(self, driver: Driver) -> None:
        layer = new_id()
        driver.create(layer, None, CreateOpts(storage_opts={"size": QUOTA}))
        chunk = os.urandom(1 << 20)
        written = 0
        path = driver.get(layer)
        try:
            # The error may come from write, fsync or close.
            with pytest.raises(OSError) as info, open(os.path.join(path, "filler"), "wb") as f:
                while written < 8 * QUOTA_BYTES:
                    f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                    written += len(chunk)
        finally:
            driver.put(layer)
        assert info.value.errno in (errno.ENOSPC, errno.EDQUOT), f"writing past the quota failed with {info.value}"
        assert written <= 2 * QUOTA_BYTES, f"{written} bytes fitted in a {QUOTA} quota"

    @pytest.mark.layerstore_requires("read-only-layers")
    def test_read_only_layer(self, driver: Driver) -> None:
        layer = new_id()
        driver.create(layer, None, CreateOpts(read_only=True))
        driver.apply_diff(layer, None, io.BytesIO(TarBuilder().file("f", b"image data\n").bytes()))
        with driver.mounted(layer) as path:
            with open(os.path.join(path, "f"), "rb") as f:
                assert f.read() == b"image data\n"
            with pytest.raises(OSError) as info:
                open(os.path.join(path, "new"), "wb").close()
            assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
            assert not os.path.exists(os.path.join(path, "new"))

    @pytest.mark.layerstore_requires("native-diff")
    def test_native_diff_matches_naive_comparison(self, driver: Driver) -> None:
        from layerstore.archive.changes import tree_changes
        from layerstore.archive.export import export_changes

        from ._tars import read_tar

        parent = build_layer(
            driver,
            tar=TarBuilder().dir("d").file("d/a", b"a\n").file("d/b", b"b\n").dir("o").file("o/x", b"x\n").bytes(),
        )
        child_tar = (
            TarBuilder()
            .dir("d", mtime=1_600_000_100)
            .file("d/a", b"changed a\n", mtime=1_600_000_100)
            .whiteout("d/b")
            .dir("o")
            .opaque("o")
            .file("o/y", b"y\n")
            .file("n", b"new\n")
        )
        child = new_id()
        driver.create(child, parent)
        size = driver.apply_diff(child, parent, io.BytesIO(child_tar.bytes()))
        assert size == child_tar.regular_bytes == driver.diff_size(child, parent)
        with driver.mounted(parent) as lower, driver.mounted(child) as upper:
            naive = tree_changes(upper, lower)
            with export_changes(upper, naive, id_maps=driver.id_maps) as stream:
                naive_members = read_tar(stream)
        assert [str(c) for c in driver.changes(child, parent)] == [str(c) for c in naive]

        def key(m: Member) -> tuple[object, ...]:
            return (m.name, m.kind, m.mode, m.uid, m.gid, m.size, m.digest, m.linkname)

        native_members = diff_members(driver, child, parent)
        # Whiteouts may differ in form: an opaque marker hides what per-entry whiteouts hide.
        assert sorted(key(m) for m in native_members if ".wh." not in m.name) == sorted(
            key(m) for m in naive_members if ".wh." not in m.name
        )
        native_whiteouts = {m.name for m in native_members if ".wh." in m.name}
        naive_whiteouts = {m.name for m in naive_members if ".wh." in m.name}
        for name in naive_whiteouts - native_whiteouts:
            directory = name.rpartition("/")[0]
            assert f"{directory}/.wh..wh..opq" in native_whiteouts, f"the native diff does not hide {name}"
        for name in native_whiteouts - naive_whiteouts:
            directory, _, base = name.rpartition("/")
            assert base == ".wh..wh..opq", f"the native diff has a whiteout the trees do not explain: {name}"
            hidden = [
                c.path.rpartition("/")[2]
                for c in naive
                if c.path.rpartition("/")[0] == f"/{directory}" and c.kind == ChangeKind.DELETE
            ]
            assert hidden and not hidden_by_diff(naive_members, directory, hidden), (
                f"the native diff makes {directory} opaque, but it hides nothing of the parent"
            )
