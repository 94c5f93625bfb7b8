"""Fault injection for the image commands: SIGKILL at random moments of concurrent load, rmi, tag, untag, save, gc.

The two images share their base layer.  They are built by umoci and skopeo
(never by layerstore): one as a docker-archive, one as an OCI layout
directory.  Each trial starts two to four commands at once and SIGKILLs some
of them after a random pause.  After every trial: `images` lists, every
listed image inspects, `check` passes, `gc` leaves no temporary file of the
image store, the graph or the driver, and no temporary file is left beside a
save's output.  A save that finished wrote an archive skopeo reads.  At the
end both images load again, save to archives whose layers skopeo reports
with the original digests, and `rmi` of every image leaves no layer behind.

``LAYERSTORE_FAULT_TRIALS`` and ``LAYERSTORE_FAULT_SEED`` work as in
``test_kills``.  Run alone with ``pytest -m fault tests/fault``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Store, check_after_kills, leftovers
from .image_inputs import docker_archive, skopeo_layers, umoci_layout
from .test_kills import TRIALS
from .test_references import layer_tar

pytestmark = pytest.mark.fault

OPS = ("load-docker", "load-oci", "rmi", "tag", "untag", "save", "images", "gc")
NAME_A = "example.com/fault/a:v1"


def _build_inputs(work: Path, rng: random.Random) -> tuple[Path, Path, dict[str, list[str]]]:
    """A docker-archive of image a and an OCI layout of image b (umoci, skopeo); the layer digests of each."""
    base = {f"dir{i}/file{j}": rng.randbytes(rng.randrange(1, 60_000)) for i in range(5) for j in range(20)}
    tops = {
        "a": {"dir0/file0": b"changed by a\n", "only-a": rng.randbytes(300_000)},
        "b": {"dir1/file1": b"changed by b\n", "only-b": rng.randbytes(200_000)},
    }
    layouts = {image: umoci_layout(work, image, [base, top]) for image, top in tops.items()}
    digests = {image: ["sha256:" + hashlib.sha256(layer_tar(files)).hexdigest() for files in (base, top)]
               for image, top in tops.items()}
    return docker_archive(layouts["a"], work / "a-docker.tar", NAME_A), layouts["b"], digests


def _images(store: Store) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(store.ok("images", "--json"))
    return rows


def _image_ids(store: Store) -> list[str]:
    return list(dict.fromkeys(str(row["id"]) for row in _images(store)))  # a row per name


def _names(store: Store) -> list[str]:
    found = []
    for row in _images(store):
        found += [str(n) for n in row.get("names") or []]  # type: ignore[attr-defined]
    return found


def test_sigkill_during_image_commands(store: Store, tmp_path: Path) -> None:
    seed = int(os.environ.get("LAYERSTORE_FAULT_SEED", str(random.randrange(1 << 30))))
    print(f"image fault injection on {store.driver}: seed {seed}")  # shown with a failure
    rng = random.Random(seed)
    work = tmp_path / "inputs"
    work.mkdir()
    docker_archive, oci_layout, digests = _build_inputs(work, rng)
    outputs = tmp_path / "out"
    outputs.mkdir()
    store.ok("load", "-i", docker_archive)
    store.ok("load", "-i", oci_layout)
    counts: Counter[str] = Counter()
    for trial in range(TRIALS):
        present = _image_ids(store)
        names = _names(store)
        extra = [n for n in names if "/extra:" in n]
        procs = []
        for n in range(rng.randrange(2, 5)):
            op = rng.choice(OPS)
            if op == "load-docker":
                args: list[str | Path] = ["load", "-q", "-i", docker_archive]
            elif op == "load-oci":
                args = ["load", "-q", "-i", oci_layout]
            elif op == "rmi" and present:
                args = ["rmi", rng.choice(present + names)]
            elif op == "tag" and present:
                args = ["tag", rng.choice(present), f"example.com/fault/extra:t{trial}-{n}"]
            elif op == "untag" and extra:
                args = ["untag", rng.choice(extra)]
            elif op == "save" and present:
                args = ["save", "-o", outputs / f"save-{trial}-{n}.tar", rng.choice(present + names)]
            elif op == "gc":
                args = ["gc", "-q"]
            else:
                op, args = "images", ["images", "--json"]
            procs.append((op, args, store.popen(*args, stdout=subprocess.PIPE)))
        time.sleep(rng.uniform(0.0, 0.5))
        for op, args, proc in procs:
            if rng.random() < 0.7 and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                counts["kills in flight"] += 1
            _, err = proc.communicate()
            counts[op] += 1
            if proc.returncode == -signal.SIGKILL:
                continue
            text = err.decode(errors="replace")
            assert "Traceback" not in text and "internal error" not in text, (seed, trial, args, text)
            if op == "save" and proc.returncode == 0:
                assert skopeo_layers(Path(args[2])), (seed, trial, args)
                counts["saves checked"] += 1
        counts["trials"] += 1
        # After the kills: every listed image answers, the layers are whole, gc leaves nothing behind.
        for image_id in _image_ids(store):
            store.ok("inspect", image_id)
        check_after_kills(store, (seed, trial))
        for name in os.listdir(outputs):
            assert ".layerstore-" not in name, (seed, trial, name)
    loaded = {"a": store.ok("load", "-q", "-i", docker_archive).split()[-1],
              "b": store.ok("load", "-q", "-i", oci_layout).split()[-1]}
    for image, image_id in loaded.items():
        archive = outputs / f"final-{image}.tar"
        store.ok("save", "-o", archive, image_id)
        assert skopeo_layers(archive) == digests[image], (seed, image)
    store.ok("rmi", *_image_ids(store))
    assert _images(store) == [], seed
    assert json.loads(store.ok("ls", "--json")) == [], seed
    store.ok("gc")
    assert leftovers(store) == [], seed
    print(f"image fault injection on {store.driver}: seed {seed}, {dict(counts)}, problems: 0")
