"""Odd inputs get one clear line (or a defined behaviour), never an internal error."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from cli_helpers import Run, assert_one_line_error, make_tar, ok


def _import(run: Run, tmp_path: Path, members: dict[str, bytes | None], *extra: str) -> str:
    path = tmp_path / f"odd-{len(list(tmp_path.glob('odd-*')))}.tar"
    path.write_bytes(make_tar(members))
    return ok(run("import", *extra, path)).strip()


def test_base256_uid_out_of_range(run: Run, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.size, info.uid = 1, 2**40  # written in base-256
        tf.addfile(info, io.BytesIO(b"x"))
    path = tmp_path / "uid.tar"
    path.write_bytes(buf.getvalue())
    assert_one_line_error(run("import", path), "out of range")
    assert "f" not in ok(run("ls"))
    assert os.listdir(tmp_path / "store" / "graph" / "_tmp") == []


def test_binary_config_file(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xff\xfe\x00binary\x80")
    assert_one_line_error(run("--config", config, "ls"), str(config), "UTF-8")


def test_message_not_utf8(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "l.tar"
    path.write_bytes(make_tar({"f": b"x"}))
    assert_one_line_error(run("import", "-m", os.fsdecode(b"bad \xff"), path), "--message")


def test_empty_parent_is_refused(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "l.tar"
    path.write_bytes(make_tar({"f": b"x"}))
    assert_one_line_error(run("import", "--parent", "", path), "--parent")
    assert "f" not in ok(run("ls"))


def test_empty_driver_is_refused(run: Run) -> None:
    assert_one_line_error(run("--driver", "", "ls"), "--driver")


def test_rm_same_image_twice_deletes_it_once(run: Run, tmp_path: Path) -> None:
    image = _import(run, tmp_path, {"f": b"x"})
    proc = run("rm", image, image[:12])
    assert proc.returncode in (0, 1)
    out = ok(run("ls"))
    assert image[:12] not in out
    assert proc.stderr.decode().count("\n") <= 1, proc.stderr


def test_diff_escapes_odd_names(run: Run, tmp_path: Path) -> None:
    image = _import(run, tmp_path, {"new\nline": b"x", "back\\slash": b"y", "tab\there": b"z"})
    lines = ok(run("diff", image)).splitlines()
    assert sorted(lines) == sorted(["A /new\\nline", "A /back\\\\slash", "A /tab\\there"])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_no_space_on_standard_output_names_it(run: Run, tmp_path: Path) -> None:
    image = _import(run, tmp_path, {"f": os.urandom(100_000)})
    with open("/dev/full", "wb") as full:
        assert stat.S_ISCHR(os.fstat(full.fileno()).st_mode)
        proc = run("export", image, stdout=full.fileno())
    line = assert_one_line_error(proc, "no space left on standard output")
    assert str(tmp_path / "store") not in line
