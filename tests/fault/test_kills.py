"""Fault injection: SIGKILL at random moments of concurrent commands, then the store must be whole.

Each trial starts two to four commands at once (import, import --parent,
rm, export, check, mount) and SIGKILLs some of them after a random pause.
After every trial: the store opens, `check` passes, `gc` leaves no staging,
trash or temporary leftovers and `check` lists no orphan afterwards; on zfs,
``zfs list`` (not our reader) shows a dataset per image and only the clone
snapshots of existing children.  At the end a re-import exports byte-identical
and `rm` of every image succeeds.

``LAYERSTORE_FAULT_TRIALS`` sets the number of trials per driver (default 6);
``LAYERSTORE_FAULT_SEED`` fixes the random seed.  Run alone with
``pytest -m fault tests/fault``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from layerstore.mountinfo import mount_of
from layerstore.process import run_command

from .conftest import Store, check_after_kills
from .test_references import layer_tar

pytestmark = pytest.mark.fault

TRIALS = int(os.environ.get("LAYERSTORE_FAULT_TRIALS", "6"))
OPS = ("import", "import-parent", "rm", "export", "check", "mount")
def _zfs_leaks(store: Store) -> list[str]:
    """Datasets and snapshots under the store's parent dataset that no image accounts for, per ``zfs list``."""
    entry = mount_of(store.root)
    assert entry is not None
    fsname = entry.source
    listed = run_command(["zfs", "list", "-H", "-o", "name", "-r", "-t", "filesystem,snapshot", fsname])
    images = set(_images(store))
    leaks = []
    for name in listed.stdout.decode().split():
        if name == fsname:
            continue
        dataset, _, snapshot = name.partition("@")
        layer = dataset.removeprefix(f"{fsname}/")
        if not snapshot:
            if layer not in images:
                leaks.append(name)
        elif snapshot.removeprefix("layerstore-clone-") not in images or layer not in images:
            leaks.append(name)
    mnt = store.root / "zfs" / "mnt"
    leaks += [f"mount directory {n}" for n in os.listdir(mnt) if n not in images] if mnt.is_dir() else []
    return leaks


def _images(store: Store) -> dict[str, str | None]:
    import json

    return {row["id"]: row.get("parent") for row in json.loads(store.ok("ls", "--json"))}


def _remove_all(store: Store) -> None:
    images = _images(store)
    while images:
        parents = {p for p in images.values() if p}
        leaves = [i for i in images if i not in parents]
        for image_id in leaves:
            store.ok("rm", image_id)
        images = _images(store)


def test_sigkill_at_random_moments(store: Store, tmp_path: Path) -> None:
    seed = int(os.environ.get("LAYERSTORE_FAULT_SEED", str(random.randrange(1 << 30))))
    print(f"fault injection on {store.driver}: seed {seed}")  # shown with a failure (LAYERSTORE_FAULT_SEED repeats it)
    rng = random.Random(seed)
    files = {f"dir{i}/file{j}": os.urandom(rng.randrange(1, 200_000)) for i in range(6) for j in range(8)}
    base_tar = tmp_path / "base.tar"
    base_tar.write_bytes(layer_tar(files))
    child_tar = tmp_path / "child.tar"
    child_tar.write_bytes(layer_tar({"dir0/file0": b"changed\n", "extra": os.urandom(500_000)}))
    base = store.ok("import", base_tar).strip()
    counts: Counter[str] = Counter()
    for trial in range(TRIALS):
        images = [i for i in _images(store) if i != base]
        procs = []
        for _ in range(rng.randrange(2, 5)):
            op = rng.choice(OPS)
            if op == "import":
                args: list[str | Path] = ["import", base_tar]
            elif op == "import-parent":
                args = ["import", "--parent", base, child_tar]
            elif op == "rm" and images:
                args = ["rm", rng.choice(images)]
            elif op == "export":
                args = ["export", rng.choice([base, *images]), "-o", tmp_path / f"out-{trial}-{len(procs)}.tar"]
            elif op == "mount":
                args = ["mount", rng.choice([base, *images])]
            else:
                op, args = "check", ["check"]
            procs.append((op, store.popen(*args, stdout=subprocess.PIPE)))
        time.sleep(rng.uniform(0.0, 0.4))
        for op, proc in procs:
            if rng.random() < 0.7 and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                counts["kills in flight"] += 1
            out, err = proc.communicate()
            counts[op] += 1
            if op == "mount" and out.strip():  # it told the path: it may have kept the mount, even if killed
                store.ok("umount", args_of(proc))
            if proc.returncode == -signal.SIGKILL:
                continue
            text = err.decode(errors="replace")
            assert "Traceback" not in text and "internal error" not in text, (seed, op, text)
        counts["trials"] += 1
        # After the kills: the store opens, check passes, gc leaves nothing behind.
        check_after_kills(store, (seed, trial))
        if store.driver == "zfs":
            assert _zfs_leaks(store) == [], (seed, trial)
        for name in os.listdir(tmp_path):
            assert ".layerstore-" not in name, (seed, trial, name)
    again = store.ok("import", base_tar).strip()
    out = tmp_path / "again.tar"
    store.ok("export", again, "-o", out)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(base_tar.read_bytes()).digest()
    _remove_all(store)
    assert _images(store) == {}
    print(f"fault injection on {store.driver}: seed {seed}, {dict(counts)}, problems: 0")


def args_of(proc: subprocess.Popen[bytes]) -> str:
    """The image argument of a finished `layerstore mount IMAGE` process."""
    args = proc.args
    assert isinstance(args, list)
    return str(args[-1])
