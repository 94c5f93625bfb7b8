"""`layerstore gc` also runs the driver's own gc hook: its staging and trash leftovers go."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cli_helpers import Run, make_tar, ok


def test_gc_collects_the_drivers_leftovers(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    ok(run("import", "-", input=make_tar({"f": b"x"})))
    trash = Path(cli_env["LAYERSTORE_ROOT"]) / "vfs" / "trash"
    trash.mkdir(exist_ok=True)
    (trash / "half-deleted.0001" / "sub").mkdir(parents=True)  # a remove killed half-way: no lock file
    assert ok(run("gc")).splitlines() == ["removed vfs trash leftover half-deleted.0001"]
    assert os.listdir(trash) == []
    assert ok(run("gc")).strip() == "nothing to remove"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_gc_removes_the_temporary_files_of_killed_writers(run: Run, cli_env: dict[str, str]) -> None:
    """A writer killed while replacing a metadata file leaves its temporary file; gc removes it, not a live one's."""
    image_id = ok(run("import", "-", input=make_tar({"f": b"x"}))).strip()
    root = Path(cli_env["LAYERSTORE_ROOT"])
    record = root / "images" / ("e" * 64)
    record.mkdir(parents=True)
    (record / "image.json").write_text("{}")
    dead, live = _dead_pid(), os.getpid()
    left = {
        f"images/.names.json.tmp-{dead}-0badc0de": root / "images" / f".names.json.tmp-{dead}-0badc0de",
        f"images/{'e' * 64}/.image.json.tmp-{dead}-0badc0de": record / f".image.json.tmp-{dead}-0badc0de",
        f"{image_id}/.blobs.json.tmp-{dead}-0badc0de": root / "graph" / image_id / f".blobs.json.tmp-{dead}-0badc0de",
    }
    kept = [root / "images" / f".names.json.tmp-{live}-0badc0de", root / "graph" / image_id / f".checksum.tmp-{live}-1"]
    for path in [*left.values(), *kept]:
        path.write_text("half written")
    assert sorted(ok(run("gc")).splitlines()) == sorted(f"removed staging leftover {name}" for name in left)
    assert [path for path in left.values() if path.exists()] == []
    assert all(path.exists() for path in kept)


def test_gc_removes_an_image_directory_whose_delete_was_cut_short(run: Run, cli_env: dict[str, str]) -> None:
    """On a full btrfs a record is deleted in place, its record file first; a kill then leaves the rest."""
    images = Path(cli_env["LAYERSTORE_ROOT"]) / "images"
    ok(run("import", "-", input=make_tar({"f": b"x"})))
    half = images / ("d" * 64)
    half.mkdir(parents=True)
    (half / "config").write_text("{}")  # image.json is gone: the image no longer exists
    assert ok(run("images", "--json")).strip() == "[]"
    assert ok(run("gc")).splitlines() == [f"removed staging leftover images/{'d' * 64}"]
    assert not half.exists()
