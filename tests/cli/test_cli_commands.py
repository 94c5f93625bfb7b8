"""The commands of `layerstore`, run as the real executable against a vfs store."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

from cli_helpers import LAYERSTORE, Run, make_tar, ok

from layerstore import load_driver

BASE = {
    "etc": None,
    "etc/a": b"file a\n",
    "etc/b": b"file b\n",
    "opt": None,
    "opt/x": b"lower x\n",
    "opt/keep": b"keep?\n",
}
CHILD = {
    "etc": None,
    "etc/.wh.a": b"",
    "etc/b": b"file b, changed\n",
    "opt": None,
    "opt/.wh..wh..opq": b"",
    "opt/y": b"upper y\n",
    "new": b"new file\n",
}


def _import(run: Run, tmp_path: Path, members: dict[str, bytes | None], *extra: str) -> tuple[str, bytes]:
    raw = make_tar(members, trailing=b"\0" * 2048)
    path = tmp_path / f"layer-{len(list(tmp_path.glob('layer-*')))}.tar"
    path.write_bytes(raw)
    image_id = ok(run("import", *extra, path)).strip()
    assert len(image_id) == 64
    return image_id, raw


def test_import_ls_inspect_export_digest_rm(run: Run, tmp_path: Path) -> None:
    base, raw = _import(run, tmp_path, BASE, "--message", "the base")
    child, child_raw = _import(run, tmp_path, CHILD, "--parent", base[:10], "-m", "whiteouts")

    listing = ok(run("ls"))
    assert base[:12] in listing and child[:12] in listing and "the base" in listing
    rows = json.loads(ok(run("ls", "--json")))
    assert {r["id"] for r in rows} == {base, child}
    assert next(r for r in rows if r["id"] == child)["parent"] == base
    tree = ok(run("ls", "--tree")).splitlines()
    assert tree[0].startswith("└─ " + base[:12])
    assert tree[1].strip().startswith("└─ " + child[:12])

    info = json.loads(ok(run("inspect", child[:8])))
    assert info["id"] == child and info["parent"] == base and info["comment"] == "whiteouts"
    assert info["size"] == len(CHILD["etc/b"]) + len(CHILD["opt/y"]) + len(CHILD["new"])
    assert info["digest"] == "sha256:" + hashlib.sha256(child_raw).hexdigest()
    assert json.loads(ok(run("inspect", "--raw", child)))["Size"] == info["size"]  # as stored, Docker's keys

    out = tmp_path / "exported.tar"
    ok(run("export", child, "-o", out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(child_raw).digest()
    streamed = run("export", base)
    assert streamed.returncode == 0 and streamed.stdout == raw
    assert ok(run("digest", base)).strip() == "sha256:" + hashlib.sha256(raw).hexdigest()

    changes = ok(run("diff", child)).splitlines()
    for line in ("D /etc/a", "C /etc/b", "A /new", "A /opt/y", "D /opt/x"):
        assert line in changes, changes
    assert all(line[:2] in ("A ", "C ", "D ") for line in changes)

    checked = ok(run("check")).splitlines()
    assert len(checked) == 2 and all(line.startswith("ok ") for line in checked)

    assert ok(run("rm", child[:12])).strip() == f"deleted {child}"
    assert ok(run("rm", base)).strip() == f"deleted {base}"
    assert json.loads(ok(run("ls", "--json"))) == []


def test_mount_stays_held_until_umount(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    base, _ = _import(run, tmp_path, BASE)
    child, _ = _import(run, tmp_path, CHILD, "--parent", base)
    path = Path(ok(run("mount", child)).strip())
    assert sorted(os.listdir(path)) == ["etc", "new", "opt"]
    assert sorted(os.listdir(path / "opt")) == ["y"]
    assert sorted(os.listdir(path / "etc")) == ["b"]
    driver = load_driver("vfs", Path(cli_env["LAYERSTORE_ROOT"]) / "vfs", runroot=cli_env["LAYERSTORE_RUNROOT"])
    try:
        assert driver.references(child) == 1  # held after the mount process exited
        ok(run("umount", child[:6]))
        assert driver.references(child) == 0
    finally:
        driver.cleanup()


def test_info_drivers_gc_json(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    _import(run, tmp_path, BASE)
    info = json.loads(ok(run("info", "--json")))
    assert info["driver"] == "vfs" and info["images"] == 1
    assert info["root"] == cli_env["LAYERSTORE_ROOT"]
    rows = {r["name"]: r for r in json.loads(ok(run("drivers", "--json")))}
    assert rows["vfs"]["supported"] is True and rows["vfs"]["selected"] is True
    for row in rows.values():
        assert row["supported"] or row["reason"]
    # nothing is left in the store by probing the drivers
    assert sorted(os.listdir(cli_env["LAYERSTORE_ROOT"])) == [".driver", "graph", "vfs"]
    assert ok(run("gc")).strip() == "nothing to remove"


def test_import_from_stdin_and_compressed(run: Run) -> None:
    import gzip

    raw = make_tar(BASE)
    image_id = ok(run("import", "-", input=gzip.compress(raw))).strip()
    assert run("export", image_id).stdout == raw


def test_import_from_a_file_on_stdin_read_from_where_it_stands(
    run: Run, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The recording worker reads a plain file itself: from the offset standard input is at.
    import subprocess

    raw = make_tar(BASE)
    held = tmp_path / "held.bin"
    held.write_bytes(b"not part of the layer" * 100 + raw)
    with open(held, "rb") as stdin:
        stdin.seek(2100)
        proc = subprocess.run([LAYERSTORE, "import", "-q", "--json", "-"], stdin=stdin, capture_output=True,
                              env=cli_env, check=False)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert run("export", record["id"]).stdout == raw


def test_drivers_without_any_driver_installed(cli_env: dict[str, str]) -> None:
    import subprocess
    import sys

    code = ("import layerstore.discovery as d; d.driver_entry_points = dict; "
            "from layerstore.cli import main; main(['drivers'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=cli_env, check=False)
    assert proc.returncode == 0
    assert "no storage driver is installed" in proc.stdout.decode()
    assert "pip install layerstore-vfs" in proc.stdout.decode()


def test_console_entry_point_exits_with_the_code_and_all_output(cli_env: dict[str, str], tmp_path: Path) -> None:
    # The installed command ends with os._exit: what it printed must still arrive, its status be main's.
    import subprocess
    import sys

    def run_entry(*args: str) -> subprocess.CompletedProcess[bytes]:
        code = f"import sys; sys.argv = ['layerstore', *{list(args)!r}]; from layerstore.cli import run; run()"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, env=cli_env, check=False)

    listing = run_entry("drivers", "--json")
    assert listing.returncode == 0, listing.stderr
    assert any(d["name"] == "vfs" for d in json.loads(listing.stdout))
    missing = run_entry("export", "0" * 12, "--output", str(tmp_path / "out.tar"))
    assert missing.returncode == 1
    assert missing.stderr.decode().count("\n") == 1 and "0" * 12 in missing.stderr.decode()
    assert not (tmp_path / "out.tar").exists()
    # Every other test here runs the installed script, which is `run`: exports to stdout compared
    # byte for byte, errors and statuses, a reader that goes away (status 141).


def test_export_to_a_file_is_atomic(run: Run, tmp_path: Path) -> None:
    image_id, _ = _import(run, tmp_path, BASE)
    out = tmp_path / "sub"
    out.mkdir()
    ok(run("export", image_id[:5], "--output", out / "x.tar"))
    with tarfile.open(out / "x.tar") as tf:
        assert sorted(tf.getnames()) == sorted(n for n in BASE)
    assert sorted(os.listdir(out)) == ["x.tar"]  # no temporary file left
