"""`layerstore gc` also runs the driver's own gc hook: its staging and trash leftovers go."""

from __future__ import annotations

import os
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
