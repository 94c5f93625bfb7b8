"""Where tar entries land: parents resolved inside the layer's full tree, links followed with the layer root as ``/``.

Each case is a small chain built from tars written here; the mounted top
layer is checked with ``os.lstat``.  Every driver must give the same tree
(the rule is documented on the ``apply_diff`` hook).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from layerstore.drivers import Driver

from ._support import build_layer, is_root, new_id
from ._tars import TarBuilder


def _names(path: str) -> list[str]:
    return sorted(os.listdir(path))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_MERGED_USR_BASE = (
    TarBuilder().dir("usr").dir("usr/lib").file("usr/lib/libc.so", b"libc\n").symlink("lib", "usr/lib").bytes()
)

#: Commands that write a tar with a sparse member, by label (GNU tar's formats and bsdtar's default).
SPARSE_TAR_COMMANDS: dict[str, list[str]] = {
    "gnu": ["tar", "--format=gnu", "--sparse"],
    "oldgnu": ["tar", "--format=oldgnu", "--sparse"],
    **{f"pax-{v}": ["tar", "--format=posix", "--sparse", f"--sparse-version={v}"] for v in ("0.0", "0.1", "1.0")},
    "bsdtar": ["bsdtar"],
}


class TarSemanticsTests:
    """One resolution rule for every driver."""

    def test_merged_usr_child_writes_through_the_lower_link(self, driver: Driver) -> None:
        base = build_layer(driver, tar=_MERGED_USR_BASE)
        child = build_layer(driver, base, tar=TarBuilder().file("lib/systemd/system/app.service", b"[Unit]\n").bytes())
        with driver.mounted(child) as root:
            assert os.readlink(f"{root}/lib") == "usr/lib", "the child replaced the lower symlink lib -> usr/lib"
            assert _read(f"{root}/usr/lib/systemd/system/app.service") == b"[Unit]\n"
            assert _names(f"{root}/usr/lib") == ["libc.so", "systemd"]
            assert stat.S_IMODE(os.lstat(f"{root}/usr/lib/systemd").st_mode) == 0o755

    def test_absolute_link_in_lower_layer_resolves_inside(self, driver: Driver, tmp_path: Path) -> None:
        owner = (5, 6) if is_root() else (0, 0)
        outside = tmp_path / f"outside-{secrets.token_hex(4)}"
        outside.mkdir()
        base = build_layer(
            driver,
            tar=TarBuilder()
            .dir("opt")
            .dir("opt/real", mode=0o750, uid=owner[0], gid=owner[1])
            .file("opt/real/old", b"old\n")
            .symlink("abs", "/opt/real")
            .symlink("out", str(outside))
            .bytes(),
        )
        child = build_layer(driver, base, tar=TarBuilder().file("abs/new", b"new\n").file("out/x", b"x\n").bytes())
        assert os.listdir(outside) == [], "an entry was written through a link to outside the layer"
        with driver.mounted(child) as root:
            assert os.readlink(f"{root}/abs") == "/opt/real"
            assert _names(f"{root}/opt/real") == ["new", "old"]
            st = os.lstat(f"{root}/opt/real")
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, *owner), (
                "the directory reached through the link lost its mode or owner"
            )
            assert _read(f"{root}/{str(outside).lstrip('/')}/x") == b"x\n"

    def test_hardlink_through_lower_link(self, driver: Driver) -> None:
        base = build_layer(driver, tar=_MERGED_USR_BASE)
        child = build_layer(
            driver,
            base,
            tar=TarBuilder()
            .hardlink("hl", "lib/libc.so")
            .file("lib/new", b"n\n")
            .hardlink("lib/new2", "lib/new")
            .bytes(),
        )
        with driver.mounted(child) as root:
            a, b = os.lstat(f"{root}/hl"), os.lstat(f"{root}/usr/lib/libc.so")
            assert (a.st_ino, a.st_nlink) == (b.st_ino, 2), "hl is not a hardlink of usr/lib/libc.so"
            assert _read(f"{root}/hl") == b"libc\n"
            c, d = os.lstat(f"{root}/usr/lib/new"), os.lstat(f"{root}/usr/lib/new2")
            assert c.st_ino == d.st_ino
            assert os.path.islink(f"{root}/lib")

    def test_whiteout_and_opaque_marker_under_lower_links(self, driver: Driver) -> None:
        base = build_layer(
            driver,
            tar=TarBuilder()
            .dir("usr")
            .dir("usr/lib")
            .file("usr/lib/a", b"a\n")
            .file("usr/lib/b", b"b\n")
            .dir("usr/share")
            .file("usr/share/c", b"c\n")
            .symlink("lib", "usr/lib")
            .symlink("share", "/usr/share")
            .bytes(),
        )
        child = build_layer(
            driver, base, tar=TarBuilder().whiteout("lib/a").opaque("share").file("share/d", b"d\n").bytes()
        )
        with driver.mounted(child) as root:
            assert _names(f"{root}/usr/lib") == ["b"]
            assert _names(f"{root}/usr/share") == ["d"]
            assert os.readlink(f"{root}/lib") == "usr/lib"
            assert os.readlink(f"{root}/share") == "/usr/share"

    def test_opaque_root_hides_every_lower_entry(self, driver: Driver) -> None:
        base = build_layer(
            driver,
            tar=TarBuilder()
            .file("a", b"a\n")
            .dir("dir")
            .file("dir/x", b"x\n")
            .dir("etc")
            .file("etc/y", b"y\n")
            .bytes(),
        )
        child = build_layer(driver, base, tar=TarBuilder().opaque(".").dir("etc").file("etc/z", b"z\n").bytes())
        with driver.mounted(child) as root:
            assert _names(root) == ["etc"], "a lower entry shows through an opaque root"
            assert _names(f"{root}/etc") == ["z"]

    def test_archive_without_end_blocks(self, driver: Driver) -> None:
        data = TarBuilder().file("a", b"a" * 700).file("b", b"b\n").bytes()
        end = (len(data) - 1024) // 512 * 512
        while data[end - 512 : end] == bytes(512):
            end -= 512
        for cut in (end, end + 512):  # no end block, a single zero block
            layer = new_id()
            driver.create(layer, None)
            assert driver.apply_diff(layer, None, io.BytesIO(data[:cut])) == 702
            with driver.mounted(layer) as root:
                assert _read(f"{root}/a") == b"a" * 700
                assert _read(f"{root}/b") == b"b\n"

    def test_sparse_files_from_gnu_tar_and_bsdtar(self, driver: Driver, tmp_path: Path) -> None:
        src = tmp_path / "sparse-src"
        src.mkdir()
        with (src / "holes").open("wb") as f:
            f.write(b"head")
            f.seek(5 << 20)
            f.write(b"tail")
        want = _read(str(src / "holes"))
        ran = 0
        for label, argv in SPARSE_TAR_COMMANDS.items():
            if shutil.which(argv[0]) is None:
                continue
            out = tmp_path / f"{label}.tar"
            subprocess.run([*argv, "-C", str(src), "-cf", str(out), "holes"], check=True, capture_output=True)
            layer = new_id()
            driver.create(layer, None)
            assert driver.apply_diff(layer, None, io.BytesIO(out.read_bytes())) == len(want), label
            assert driver.diff_size(layer, None) == len(want), label
            with driver.mounted(layer) as root:
                assert _read(f"{root}/holes") == want, f"{label}: the sparse file's content differs"
            ran += 1
        if not ran:
            pytest.skip("neither GNU tar nor bsdtar is installed to make sparse tars")
