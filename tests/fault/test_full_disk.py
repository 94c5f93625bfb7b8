"""A completely full filesystem: the user can still look, verify honestly and free space with the tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from layerstore.testing.stress import fill_filesystem

from .conftest import Store
from .test_references import base_and_child


def test_commands_work_on_a_full_filesystem(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    base, child = base_and_child(store)
    filler = store.root.parent / "filler"
    fill_filesystem(filler)
    try:
        listing = store.ok("ls")
        assert base[:12] in listing and child[:12] in listing
        check = store.run("check")
        text = check.stdout.decode()
        assert "FAILED" not in text, text  # never a false corruption report
        out = tmp_path / "child.tar"
        store.ok("export", child, "-o", out)
        assert out.stat().st_size > 0
        path = Path(store.ok("mount", child).strip())
        assert (path / "b").read_bytes() == b"child b\n"
        store.ok("umount", child)
        store.ok("rm", child)  # frees space with the tool
        store.ok("gc")
    finally:
        subprocess.run(["rm", "-rf", filler], check=True)
    store.ok("rm", base)
    store.ok("check")


def test_no_space_is_named_not_blamed_on_the_store(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    base_and_child(store)
    filler = store.root.parent / "filler"
    fill_filesystem(filler)
    try:
        proc = store.run("import", "-", input=b"\0" * 10240)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    finally:
        subprocess.run(["rm", "-rf", filler], check=True)
    assert store.ok("check")
