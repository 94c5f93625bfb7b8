"""The programs layerstore is compared with: Debian's ``containers-storage`` CLI and GNU tar (the floor).

`ContainersStorage` builds the argv of each step (so that `measure.run_measured`
times the real process) and owns cleanup: ``shutdown --force`` and a check of
/proc/self/mountinfo, unmounting whatever its store left mounted.

Import is ``import-layer --file TAR [PARENT]`` (prints the new layer ID;
gzip input is decompressed by containers-storage itself); export is
``diff --uncompressed ID``, which containers-storage reassembles from the
tar-split data it recorded at import, so its output is byte-identical too.
Create-child is ``create-layer PARENT``; mount/unmount are ``mount ID`` /
``unmount ID``; removal is ``delete-layer ID``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from layerstore.testing.loop import mounts_under

from .measure import Measurement, run_measured


class ContainersStorage:
    """One containers-storage store (graph root + run root) using storage driver `driver`."""

    def __init__(self, graph: Path, run: Path, driver: str) -> None:
        self.graph = graph
        self.run = run
        self.driver = driver
        self.base = ["containers-storage", "--storage-driver", driver, "--graph", str(graph), "--run", str(run)]
        if driver == "overlay":
            self.base += ["--storage-opt", "overlay.mountopt=nodev"]

    def _quiet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)

    def probe(self) -> str | None:
        """Return why this driver cannot run on this store, or None when it can."""
        self.graph.mkdir(parents=True, exist_ok=True)
        proc = self._quiet("status")
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr + proc.stdout).strip().splitlines() if line.strip()]
            return lines[-1] if lines else f"exit {proc.returncode}"
        return None

    def import_layer(self, tar: Path, parent: str | None = None) -> Measurement:
        """Measure ``import-layer --file TAR [PARENT]``; the new ID is the last line of stdout."""
        return run_measured([*self.base, "import-layer", "--file", str(tar), *([parent] if parent else [])])

    @staticmethod
    def layer_id(m: Measurement) -> str:
        """The layer ID printed by import-layer / create-layer."""
        lines = [line.strip() for line in m.stdout.splitlines() if line.strip()]
        if not m.ok or not lines:
            raise RuntimeError(f"containers-storage gave no layer ID: {m.failure()}")
        return lines[-1].split()[0]

    def export_layer(self, layer: str, expected: Path) -> Measurement:
        """Measure ``diff --uncompressed ID`` with the output compared with the file `expected`."""
        return run_measured([*self.base, "diff", "--uncompressed", layer], compare_stdout=expected)

    def create_layer(self, parent: str | None) -> Measurement:
        """Measure ``create-layer [PARENT]``."""
        return run_measured([*self.base, "create-layer", *([parent] if parent else [])])

    def mount(self, layer: str) -> Measurement:
        """Measure ``mount ID`` (prints the mount point)."""
        return run_measured([*self.base, "mount", layer])

    def unmount(self, layer: str) -> Measurement:
        """Measure ``unmount ID``."""
        return run_measured([*self.base, "unmount", layer])

    def delete_layer(self, layer: str) -> Measurement:
        """Measure ``delete-layer ID``."""
        return run_measured([*self.base, "delete-layer", layer])

    def wipe(self) -> None:
        """Remove every layer (unmeasured) and release the store."""
        self._quiet("wipe")
        self.shutdown()

    def shutdown(self) -> list[str]:
        """``shutdown --force``, then unmount anything still mounted under the store; return what was left."""
        if self.graph.exists():
            self._quiet("shutdown", "--force")
        left = []
        for root in (self.graph, self.run):
            for mnt in sorted(mounts_under(root), key=len, reverse=True):
                left.append(mnt)
                subprocess.run(["umount", "--lazy", mnt], check=False, capture_output=True)
        return left

    def destroy(self) -> None:
        """Wipe and delete the store directories."""
        self.wipe()
        for d in (self.graph, self.run):
            shutil.rmtree(d, ignore_errors=True)


def tar_extract(tar: Path, dest: Path) -> Measurement:
    """Measure GNU tar extracting `tar` (any compression; GNU tar detects it) into `dest` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    return run_measured(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tar), "-C", str(dest)]
    )


def cat_file(path: Path) -> Measurement:
    """Measure ``cat FILE`` with the output compared with the file: the floor of any export."""
    return run_measured(["cat", str(path)], compare_stdout=path)
