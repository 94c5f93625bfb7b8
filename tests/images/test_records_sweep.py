"""The image store's start-up sweep removes what dead processes left, never a live process's scratch files.

Every command that opens the image store sweeps ``images/.tmp-*``; `layerstore images` run while a
`layerstore pull` downloads into its scratch directory must leave that directory alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layerstore.images.records import ImageRecords


def test_a_live_process_scratch_directory_survives_the_sweep(tmp_path: Path) -> None:
    root = tmp_path / "images"
    mine = ImageRecords(root).scratch_dir("pull")
    (mine / "blob").write_bytes(b"downloading")

    # A process that made one and died (as after SIGKILL), and an entry of an older version without an owner.
    made = subprocess.run(
        [sys.executable, "-c",
         "import os, sys; from pathlib import Path; from layerstore.images.records import ImageRecords; "
         "print(ImageRecords(Path(sys.argv[1])).scratch_dir('pull'), flush=True); os._exit(0)", str(root)],
        capture_output=True, text=True, check=True)
    dead = Path(made.stdout.strip())
    old = root / ".tmp-pull-0123456789ab"
    old.mkdir()
    assert dead.is_dir() and dead.parent == root

    removed = ImageRecords(root).sweep()  # what another command does as it opens the store

    assert sorted(removed) == sorted([dead.name, old.name])
    assert (mine / "blob").read_bytes() == b"downloading"
    assert not dead.exists() and not old.exists()
