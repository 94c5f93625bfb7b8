"""apply_tar: file types and attributes from tars made by GNU tar, bsdtar and tarfile."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_helpers import NS, TarBuilder, bsd_tar, build_sample_tree, gnu_tar, snapshot

from layerstore.archive.apply import apply_tar
from layerstore.errors import InvalidArchive
from layerstore.idtools import IDMap, IDMappings


def _apply(tar: Path | bytes, dest: Path, **kwargs: object) -> int:
    if isinstance(tar, bytes):
        return apply_tar(io.BytesIO(tar), dest, **kwargs)  # type: ignore[arg-type]
    with tar.open("rb") as f:
        return apply_tar(f, dest, **kwargs)  # type: ignore[arg-type]


def _regular_size(src: Path) -> int:
    seen = set()
    total = 0
    for dirpath, _, files in os.walk(os.fsencode(src)):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


@pytest.mark.parametrize(
    ("maker", "args", "times"),
    [
        (gnu_tar, ("--format=posix", "--xattrs", "--xattrs-include=*"), "ns"),
        (gnu_tar, ("--format=gnu",), "s"),
        (bsd_tar, ("--xattrs", "--format=pax"), "ns"),
    ],
    ids=["gnu-posix", "gnu-gnu", "bsdtar-pax"],
)
def test_round_trip_of_every_type_and_attribute(
    tmp_path: Path, maker: object, args: tuple[str, ...], times: str
) -> None:
    src = build_sample_tree(tmp_path / "src")
    tar = maker(src, tmp_path / "layer.tar", *args)  # type: ignore[operator]
    dest = tmp_path / "dest"
    dest.mkdir()
    size = _apply(tar, dest)
    assert size == _regular_size(src)
    expected = snapshot(src, times=times)
    got = snapshot(dest, times=times)
    if "--xattrs" not in args:
        expected = {k: (*v[:8], ()) for k, v in expected.items()}
    assert got == expected


def test_python_tarfile_formats(tmp_path: Path) -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        dest = tmp_path / f"dest{fmt}"
        dest.mkdir()
        long = "n" * 150 + "/" + "m" * 120
        b = TarBuilder(fmt)
        b.add("a/", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6, mtime=1_500_000_000)
        b.add("a/f", data=b"data", mode=0o640, uid=7, gid=8)
        if fmt != tarfile.USTAR_FORMAT:
            b.add(long, data=b"long")
            b.add("a/big-ids", data=b"x", uid=3_000_000, gid=2_500_000)
        b.add("a/l", tarfile.SYMTYPE, linkname="f")
        assert _apply(b.bytes(), dest) == 4 + (5 if fmt != tarfile.USTAR_FORMAT else 0)
        st = os.lstat(dest / "a")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o750, 5, 6, 1_500_000_000 * NS)
        st = os.lstat(dest / "a/f")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 7, 8)
        assert os.readlink(dest / "a/l") == "f"
        if fmt != tarfile.USTAR_FORMAT:
            assert (dest / long).read_bytes() == b"long"
            st = os.lstat(dest / "a/big-ids")
            assert (st.st_uid, st.st_gid) == (3_000_000, 2_500_000)


def test_pax_fractional_mtime_and_global_header(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "77"}) as tar:
        info = tarfile.TarInfo("f")
        info.size = 1
        info.pax_headers = {"mtime": "1600000000.5", "atime": "1600000001.25"}
        tar.addfile(info, io.BytesIO(b"z"))
        info = tarfile.TarInfo("g")
        info.pax_headers = {"uid": "78"}
        tar.addfile(info, io.BytesIO(b""))
    dest = tmp_path / "d"
    dest.mkdir()
    _apply(buf.getvalue(), dest)
    st = os.lstat(dest / "f")
    assert st.st_mtime_ns == 1_600_000_000_500_000_000
    assert st.st_atime_ns == 1_600_000_001_250_000_000
    assert st.st_uid == 77  # from the global header
    assert os.lstat(dest / "g").st_uid == 78  # the local header wins


def test_base256_numbers(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.uid = 0o10000000  # too big for octal: GNU base-256
        info.mtime = 0o100000000000
        tar.addfile(info, io.BytesIO(b""))
    assert b"\x80" in buf.getvalue()[108:116]
    dest = tmp_path / "d"
    dest.mkdir()
    _apply(buf.getvalue(), dest)
    st = os.lstat(dest / "f")
    assert st.st_uid == 0o10000000
    assert st.st_mtime_ns == 0o100000000000 * NS


def test_implied_parents_are_0755_owned_by_mapped_root(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    maps = IDMappings(uids=[IDMap(0, 100000, 65536)], gids=[IDMap(0, 200000, 65536)])
    os.umask(0o077)
    try:
        _apply(TarBuilder().add("x/y/z", data=b"1", uid=1, gid=2).bytes(), dest, id_maps=maps)
    finally:
        os.umask(0o022)
    for rel in ("x", "x/y"):
        st = os.lstat(dest / rel)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (100000, 200000)
    st = os.lstat(dest / "x/y/z")
    assert (st.st_uid, st.st_gid) == (100001, 200002)


def test_unmapped_id_is_refused_naming_the_entry(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    maps = IDMappings(uids=[IDMap(0, 100000, 1000)], gids=[IDMap(0, 100000, 1000)])
    with pytest.raises(InvalidArchive, match="'far'"):
        _apply(TarBuilder().add("far", data=b"", uid=5000).bytes(), dest, id_maps=maps)


def test_setuid_survives_chown_and_capability_set_after_chown(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    (src / "ping").write_bytes(b"pp")
    os.chown(src / "ping", 1000, 1000)
    os.chmod(src / "ping", 0o6755)
    os.setxattr(src / "ping", "security.capability", cap)
    tar = gnu_tar(src, tmp_path / "t.tar", "--format=posix", "--xattrs", "--xattrs-include=*")
    dest = tmp_path / "d"
    dest.mkdir()
    _apply(tar, dest)
    st = os.lstat(dest / "ping")
    assert stat.S_IMODE(st.st_mode) == 0o6755
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert os.getxattr(dest / "ping", "security.capability") == cap


def test_entry_replaces_what_was_there(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "dir-to-file/sub").mkdir(parents=True)
    (dest / "dir-to-file/sub/x").write_text("x")
    (dest / "file-to-dir").write_text("f")
    (dest / "merged").mkdir()
    (dest / "merged/old").write_text("old")
    os.symlink("/nowhere", dest / "link-to-file")
    (dest / "file").write_text("old content that is longer")
    b = TarBuilder()
    b.add("dir-to-file", data=b"now a file")
    b.add("file-to-dir/", tarfile.DIRTYPE)
    b.add("file-to-dir/inner", data=b"i")
    b.add("merged/", tarfile.DIRTYPE, mode=0o700, uid=9)
    b.add("merged/new", data=b"n")
    b.add("link-to-file", data=b"plain")
    b.add("file", data=b"new")
    _apply(b.bytes(), dest)
    assert (dest / "dir-to-file").read_bytes() == b"now a file"
    assert (dest / "file-to-dir/inner").read_bytes() == b"i"
    assert sorted(os.listdir(dest / "merged")) == ["new", "old"]
    st = os.lstat(dest / "merged")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 9)
    assert not (dest / "link-to-file").is_symlink()
    assert (dest / "link-to-file").read_bytes() == b"plain"
    assert (dest / "file").read_bytes() == b"new"


def test_root_entry_updates_root_attributes_and_dir_times_are_restored_last(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    b = TarBuilder()
    b.add("./", tarfile.DIRTYPE, mode=0o711, mtime=1_000_000_000)
    b.add("./a/", tarfile.DIRTYPE, mtime=1_100_000_000)
    b.add("./a/f", data=b"x", mtime=1_200_000_000)
    b.add("./a/g", data=b"y", mtime=1_200_000_000)
    _apply(b.bytes(), dest)
    st = os.lstat(dest)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o711, 1_000_000_000 * NS)
    assert os.lstat(dest / "a").st_mtime_ns == 1_100_000_000 * NS


def test_hardlinks_share_the_inode_and_count_once(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    b = (
        TarBuilder()
        .add("f", data=b"12345")
        .add("g", tarfile.LNKTYPE, linkname="f")
        .add("./h", tarfile.LNKTYPE, linkname="./f")
    )
    assert _apply(b.bytes(), dest) == 5
    assert os.lstat(dest / "f").st_ino == os.lstat(dest / "g").st_ino == os.lstat(dest / "h").st_ino
    assert os.lstat(dest / "f").st_nlink == 3


def test_hardlink_to_lower_content(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "lower").write_text("lower")
    _apply(TarBuilder().add("link", tarfile.LNKTYPE, linkname="lower").bytes(), dest)
    assert os.lstat(dest / "link").st_ino == os.lstat(dest / "lower").st_ino


def test_non_utf8_names_from_pax_and_gnu(tmp_path: Path) -> None:
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        dest = tmp_path / f"d{fmt}"
        dest.mkdir()
        _apply(TarBuilder(fmt).add("caf\udce9", data=b"x").bytes(), dest)
        assert os.listdir(os.fsencode(dest)) == [b"caf\xe9"]


def test_stream_is_read_to_its_end(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    stream = io.BytesIO(TarBuilder().add("f", data=b"x").bytes() + b"trailing garbage" * 1000)
    apply_tar(stream, dest)
    assert stream.read() == b""


def test_overlay_format_whiteouts(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    b = TarBuilder()
    b.add("dir/", tarfile.DIRTYPE)
    b.add("dir/.wh..wh..opq")
    b.add("dir/kept", data=b"k")
    b.add("etc/.wh.gone")
    _apply(b.bytes(), dest, whiteout_format="overlay", overlay_xattr_prefix="user.overlay.")
    assert os.getxattr(dest / "dir", "user.overlay.opaque") == b"y"
    st = os.lstat(dest / "etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert sorted(os.listdir(dest / "dir")) == ["kept"]
    assert sorted(os.listdir(dest / "etc")) == ["gone"]


def test_overlay_xattrs_in_archives_are_ignored(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.ok": "1"}
        tar.addfile(info)
    _apply(buf.getvalue(), dest)
    assert os.listxattr(dest / "d") == ["user.ok"]


def test_bad_whiteout_format_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whiteout_format"):
        apply_tar(io.BytesIO(b""), tmp_path, whiteout_format="aufs")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if proc.returncode:
        from layerstore.testing import unavailable

        unavailable("tmpfs", f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_out_of_space_is_storage_full_naming_the_path(tiny_fs: Path) -> None:
    from layerstore.errors import StorageFull

    data = TarBuilder().add("small", data=b"x").add("dir/huge", data=os.urandom(1 << 20)).bytes()
    with pytest.raises(StorageFull, match="huge"):
        apply_tar(io.BytesIO(data), tiny_fs)


@pytest.mark.parametrize("collecting", [True, False], ids=["collector on", "collector off"])
def test_the_garbage_collector_is_paused_during_an_extraction_and_left_as_it_was(
    tmp_path: Path, collecting: bool
) -> None:
    import gc

    tar = TarBuilder()
    for i in range(3000):  # far more new objects than the collector's first threshold (700)
        tar.add(f"f{i}", data=b"x")
    stream = tar.stream()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    was = gc.isenabled()
    (gc.enable if collecting else gc.disable)()
    gc.callbacks.append(count)
    try:
        apply_tar(stream, tmp_path)
        assert gc.isenabled() is collecting
    finally:
        gc.callbacks.remove(count)
        (gc.enable if was else gc.disable)()
    assert len(collections) <= (1 if collecting else 0)  # at most the one that catches up on resuming
    assert len(os.listdir(tmp_path)) == 3000
