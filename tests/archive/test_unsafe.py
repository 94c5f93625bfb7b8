"""Unsafe and broken archives are refused with InvalidArchive naming the entry; nothing lands outside."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, outside_untouched

from layerstore.archive.apply import apply_tar
from layerstore.conformance.suite._tarsemantics import SPARSE_TAR_COMMANDS
from layerstore.errors import InvalidArchive


def _refused(layer: Path, data: bytes, match: str) -> None:
    with pytest.raises(InvalidArchive, match=match):
        apply_tar(io.BytesIO(data), layer)
    assert outside_untouched(layer)


def test_dotdot_component(layer: Path) -> None:
    _refused(layer, TarBuilder().add("../outside/evil", data=b"x").bytes(), r"'\.\./outside/evil'.*'\.\.'")
    _refused(layer, TarBuilder().add("a/../../outside/evil", data=b"x").bytes(), r"a/\.\./\.\./outside/evil")


def test_absolute_name(layer: Path) -> None:
    target = str(layer.parent / "outside" / "evil")
    _refused(layer, TarBuilder().add(target, data=b"x").bytes(), "absolute")


def _contained(layer: Path, data: bytes) -> None:
    apply_tar(io.BytesIO(data), layer)
    assert outside_untouched(layer)


def test_symlinked_parent_pointing_out_lands_inside(layer: Path) -> None:
    outside = layer.parent / "outside"
    b = TarBuilder().add("link", tarfile.SYMTYPE, linkname=str(outside))
    b.add("link/evil", data=b"x")
    _contained(layer, b.bytes())
    assert (layer / str(outside).lstrip("/") / "evil").read_bytes() == b"x"
    assert os.readlink(layer / "link") == str(outside)


def test_relative_symlinked_parent_pointing_out_stops_at_the_root(layer: Path) -> None:
    b = TarBuilder().add("link", tarfile.SYMTYPE, linkname="../../../../outside")
    b.add("link/evil", data=b"x")
    _contained(layer, b.bytes())
    assert (layer / "outside" / "evil").read_bytes() == b"x"


def test_symlink_followed_by_file_written_through_it(layer: Path) -> None:
    b = TarBuilder().add("keep", tarfile.SYMTYPE, linkname=str(layer.parent / "outside" / "keep"))
    b.add("keep", data=b"overwrite")  # replaces the link itself, never its target
    apply_tar(b.stream(), layer)
    assert (layer / "keep").read_bytes() == b"overwrite"
    assert outside_untouched(layer)


def test_symlink_planted_in_lower_content(layer: Path) -> None:
    os.symlink(layer.parent / "outside", layer / "lib")
    _contained(layer, TarBuilder().add("lib/evil.so", data=b"x").bytes())
    assert (layer / str(layer.parent / "outside").lstrip("/") / "evil.so").is_file()


def test_merged_usr_child_writes_through_the_link(layer: Path) -> None:
    (layer / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", layer / "lib")
    _contained(layer, TarBuilder().add("lib/systemd/system/app.service", data=b"[Unit]\n").bytes())
    assert os.readlink(layer / "lib") == "usr/lib"
    assert (layer / "usr/lib/systemd/system/app.service").read_bytes() == b"[Unit]\n"


def test_link_loop_is_refused(layer: Path) -> None:
    b = TarBuilder().add("a", tarfile.SYMTYPE, linkname="b").add("b", tarfile.SYMTYPE, linkname="a")
    b.add("a/x", data=b"x")
    _refused(layer, b.bytes(), "'a/x'.*symbolic links")


def test_directory_replaced_by_symlink_then_written_through(layer: Path) -> None:
    b = TarBuilder().add("d/", tarfile.DIRTYPE).add("d/ok", data=b"1")
    b.add("d", tarfile.SYMTYPE, linkname=str(layer.parent / "outside"))
    b.add("d/evil", data=b"x")
    # Replacing d would drop content this archive wrote (d/ok): refused, nothing outside.
    _refused(layer, b.bytes(), "'d'.*'d/ok'")


def test_whiteout_of_own_content_is_refused(layer: Path) -> None:
    b = TarBuilder().add("sub/keep", data=b"1").add("sub/.wh.keep", data=b"")
    _refused(layer, b.bytes(), "'sub/keep'")


def test_hardlink_to_outside(layer: Path) -> None:
    target = str(layer.parent / "outside" / "keep")
    _refused(layer, TarBuilder().add("h", tarfile.LNKTYPE, linkname=target).bytes(), "'h'.*absolute")
    _refused(layer, TarBuilder().add("h", tarfile.LNKTYPE, linkname="../outside/keep").bytes(), "'h'")


def test_hardlink_to_missing_target(layer: Path) -> None:
    _refused(layer, TarBuilder().add("h", tarfile.LNKTYPE, linkname="missing").bytes(), "'h'.*does not exist")
    _refused(layer, TarBuilder().add("h", tarfile.LNKTYPE, linkname="no/dir/x").bytes(), "'h'.*does not exist")


def test_hardlink_through_symlinked_directory(layer: Path) -> None:
    b = TarBuilder().add("link", tarfile.SYMTYPE, linkname=str(layer.parent / "outside"))
    b.add("h", tarfile.LNKTYPE, linkname="link/keep")
    _refused(layer, b.bytes(), "'h'.*does not exist")  # resolved inside the layer, where there is no keep


def test_symlinks_themselves_may_point_anywhere(layer: Path) -> None:
    b = TarBuilder().add("a", tarfile.SYMTYPE, linkname="/etc/shadow").add("b", tarfile.SYMTYPE, linkname="../../x")
    apply_tar(b.stream(), layer)
    assert os.readlink(layer / "a") == "/etc/shadow"
    assert os.readlink(layer / "b") == "../../x"


@pytest.mark.parametrize("argv", SPARSE_TAR_COMMANDS.values(), ids=SPARSE_TAR_COMMANDS.keys())
def test_sparse_file_keeps_its_holes(tmp_path: Path, layer: Path, argv: list[str]) -> None:
    src = tmp_path / "sparse-src"
    src.mkdir()
    with (src / "holes").open("wb") as f:
        for offset in (0, 3 << 20, 9 << 20):
            f.seek(offset)
            f.write(os.urandom(5000))
        f.truncate(12 << 20)
    out = tmp_path / "sparse.tar"
    subprocess.run([*argv, "-C", str(src), "-cf", str(out), "holes"], check=True)
    assert apply_tar(io.BytesIO(out.read_bytes()), layer) == 12 << 20
    assert (layer / "holes").read_bytes() == (src / "holes").read_bytes()
    assert os.stat(layer / "holes").st_blocks * 512 < 1 << 20, "the holes were written as zeros"
def test_device_nodes_without_cap_mknod(tmp_path: Path) -> None:
    layer = tmp_path / "l"
    layer.mkdir()
    tar = tmp_path / "dev.tar"
    tar.write_bytes(TarBuilder().add("null", tarfile.CHRTYPE, devmajor=1, devminor=3).bytes())
    code = (
        "import sys\n"
        "from layerstore.archive.apply import apply_tar\n"
        "from layerstore.errors import InvalidArchive\n"
        "try:\n"
        f"    apply_tar(open({str(tar)!r}, 'rb'), {str(layer)!r})\n"
        "except InvalidArchive as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-mknod", "--inh-caps=-mknod", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 3) and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop CAP_MKNOD here: {proc.stderr.strip()}")
    assert proc.returncode == 3, proc.stderr
    assert "'null'" in proc.stdout and "CAP_MKNOD" in proc.stdout
    assert os.listdir(layer) == []


def test_non_tar_input(layer: Path) -> None:
    _refused(layer, b"this is not a tar archive\n" * 100, "not a tar archive")
    _refused(layer, b"short", "not a tar archive")
    _refused(layer, b"", "not a tar archive")


def test_truncated_payload_names_the_entry(layer: Path) -> None:
    data = TarBuilder().add("first", data=b"1").add("big", data=os.urandom(5000)).bytes()
    _refused(layer, data[: 512 * 4 + 100], "'big'")


def test_truncated_header(layer: Path) -> None:
    data = TarBuilder().add("first", data=b"1").add("second", data=b"2").bytes()
    _refused(layer, data[: 512 * 2 + 200], "truncated.*'first'")


@pytest.mark.parametrize("ending", [0, 1], ids=["no-end-blocks", "one-zero-block"])
def test_missing_end_of_archive_is_complete(layer: Path, ending: int) -> None:
    data = TarBuilder(tarfile.USTAR_FORMAT).add("first", data=b"1").add("second", data=b"22").bytes()
    assert apply_tar(io.BytesIO(data[: 2048 + 512 * ending]), layer) == 3
    assert (layer / "second").read_bytes() == b"22"


def test_header_cut_says_where(layer: Path) -> None:
    data = TarBuilder(tarfile.USTAR_FORMAT).add("first", data=b"1").bytes()
    _refused(layer, data[: 1024 + 100], "'first' is cut after 100 of 512 bytes")


def test_bad_checksum_after_first_entry(layer: Path) -> None:
    data = bytearray(TarBuilder(tarfile.USTAR_FORMAT).add("first", data=b"1").add("second", data=b"2").bytes())
    data[1024 + 10] ^= 0x55
    _refused(layer, bytes(data), "checksum.*'first'")


def test_garbage_in_numeric_field(layer: Path) -> None:
    data = bytearray(TarBuilder(tarfile.USTAR_FORMAT).add("f", data=b"1").bytes())
    data[124:136] = b"zzzzzzzzzzz\0"
    data[148:156] = b"        "
    data[148:156] = b"%06o\0 " % sum(data[:512])
    _refused(layer, bytes(data), "'f'.*size")
