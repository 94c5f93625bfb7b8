"""Mount references die with their holder; a failed `rm` changes nothing.

Each test runs on every driver of `DRIVERS` (see conftest).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

from .conftest import Store


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def base_and_child(store: Store) -> tuple[str, str]:
    base = store.ok("import", "-", input=layer_tar({"a": b"base a\n", "big": os.urandom(3_000_000)})).strip()
    child = store.ok("import", "--parent", base, "-", input=layer_tar({"b": b"child b\n"})).strip()
    return base, child


_HOLD_AND_DIE = """
import os, signal, sys
from layerstore import load_driver
driver = load_driver(sys.argv[1], sys.argv[2], runroot=sys.argv[3])
driver.get(sys.argv[4])
os.kill(os.getpid(), signal.SIGKILL)
"""


def references(store: Store, image_id: str) -> int:
    probe = ("import sys\nfrom layerstore import load_driver\n"
             "d = load_driver(sys.argv[1], sys.argv[2], runroot=sys.argv[3])\n"
             "print(d.references(sys.argv[4]))\nd.cleanup()\n")
    out = subprocess.run([sys.executable, "-c", probe, store.driver, store.root / store.driver,
                          store.env["LAYERSTORE_RUNROOT"], image_id], capture_output=True, check=True)
    return int(out.stdout)


def _hold_and_die(store: Store, image_id: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE, store.driver, store.root / store.driver,
                           store.env["LAYERSTORE_RUNROOT"], image_id], check=False)
    assert proc.returncode == -signal.SIGKILL


def test_reference_of_a_killed_holder_does_not_block_rm(store: Store) -> None:
    base, child = base_and_child(store)
    _hold_and_die(store, child)
    store.ok("rm", child)  # before: "mounted (1 reference)" forever
    store.ok("rm", base)
    assert json.loads(store.ok("ls", "--json")) == []


def test_gc_releases_references_of_dead_processes(store: Store) -> None:
    _, child = base_and_child(store)
    _hold_and_die(store, child)
    assert child in store.ok("gc")
    assert references(store, child) == 0
    merged = store.root / store.driver / child / "merged"
    assert not os.path.ismount(merged)


def test_killed_export_leaves_no_reference(store: Store) -> None:
    _, child = base_and_child(store)
    # An export into a pipe nobody reads blocks while holding the layer mounted.
    holder = store.popen("export", child, stdout=subprocess.PIPE)
    refs = Path(store.env["LAYERSTORE_RUNROOT"])
    for _ in range(100_000):
        if any(name.startswith("p.") for _, _, names in os.walk(refs) for name in names):
            break
        os.sched_yield()
    holder.kill()
    holder.wait()
    assert holder.stdout is not None and holder.stderr is not None
    holder.stdout.close()
    holder.stderr.close()
    store.ok("rm", child)


def test_mount_survives_its_process_and_umount_force_releases_all(store: Store) -> None:
    _, child = base_and_child(store)
    path = Path(store.ok("mount", child).strip())
    store.ok("mount", child)
    assert (path / "b").read_bytes() == b"child b\n"
    assert references(store, child) == 2
    store.ok("umount", "--force", child)
    assert references(store, child) == 0
    store.ok("rm", child)


def test_failed_rm_changes_nothing(store: Store) -> None:
    """A refused or failed rm leaves the image, its files and its references exactly as they were."""
    _, child = base_and_child(store)
    path = Path(store.ok("mount", child).strip())
    sleeper = subprocess.Popen(["sleep", "infinity"], cwd=path)
    try:
        before = store.ok("ls", "--json")
        refused = store.run("rm", child)
        err = refused.stderr.decode()
        assert refused.returncode != 0 and len(err.splitlines()) == 1 and "mounted" in err, err
        assert store.ok("ls", "--json") == before
        assert references(store, child) == 1
        assert (path / "b").read_bytes() == b"child b\n"
        forced = store.run("rm", "--force", child)
        if forced.returncode != 0:  # allowed to fail, but then nothing changed
            assert len(forced.stderr.decode().splitlines()) == 1, forced.stderr
            assert store.ok("ls", "--json") == before
            assert references(store, child) == 1
            assert (path / "b").read_bytes() == b"child b\n"
        else:
            assert child not in store.ok("ls", "--json")
            assert references(store, child) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    if forced.returncode != 0:
        store.ok("umount", child)
        store.ok("rm", child)
    store.ok("check")
