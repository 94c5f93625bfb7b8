"""Concurrent imports, removals and start-ups never step on each other's staging or trash."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import Store
from .test_references import layer_tar


def test_concurrent_rm_import_and_startups(store: Store) -> None:
    base = store.ok("import", "-", input=layer_tar({"base": b"b" * 100_000})).strip()
    images = [store.ok("import", "--parent", base, "-", input=layer_tar({f"f{i}": b"x" * 50_000})).strip()
              for i in range(6)]
    procs = [store.popen("rm", "-q", image) for image in images]  # -q: no summary, so stderr holds only warnings
    procs += [store.popen("ls") for _ in range(4)]
    procs += [store.popen("gc", "-q") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, (proc.args, err.decode(errors="replace"))
        assert not err, (proc.args, err.decode(errors="replace"))  # no warning about foreign leftovers either
    assert [row["id"] for row in json.loads(store.ok("ls", "--json"))] == [base]
    store.ok("check")


def test_concurrent_child_imports_and_startups(store: Store, tmp_path: Path) -> None:
    base = store.ok("import", "-", input=layer_tar({"base": b"b" * 100_000})).strip()
    child = tmp_path / "child.tar"
    child.write_bytes(layer_tar({"child": b"c" * 200_000}))
    procs = [store.popen("import", "-q", "--parent", base, child, stdout=subprocess.PIPE) for _ in range(6)]
    procs += [store.popen("ls") for _ in range(4)]
    created = []
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode == 0, (proc.args, err.decode(errors="replace"))
        assert not err, (proc.args, err.decode(errors="replace"))
        if "import" in proc.args and out:
            created.append(out.decode().strip())
    assert len(created) == 6
    rows = json.loads(store.ok("ls", "--json"))
    assert sorted(row["id"] for row in rows) == sorted([base, *created])
    store.ok("check")
