"""Measure creating (and deleting) a child layer: btrfs ioctls versus the ``btrfs`` command.

Run as root: ``.venv/bin/python plugins/btrfs/benchmarks/create_child.py [COUNT]``.
Makes a 1 GiB loop-mounted btrfs in a temporary directory, a parent
subvolume with 1000 files, then COUNT snapshots of it each way, and prints
the median and mean time per operation.  Results are in the plugin README.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from layerstore.process import run_command
from layerstore.testing.loop import loop_filesystem
from layerstore_btrfs import _btrfs


def _timed(fn: object, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return times


def _report(label: str, times: list[float]) -> None:
    print(f"{label:38s} median {statistics.median(times) * 1e3:7.3f} ms  mean {statistics.mean(times) * 1e3:7.3f} ms")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp, loop_filesystem(Path(tmp), "btrfs", 1024) as mnt:
        _btrfs.create_subvolume(mnt, "parent")
        for i in range(1000):
            (mnt / "parent" / f"f{i}").write_bytes(b"x" * 4096)
        run_command(["sync"])
        a, b = mnt / "a", mnt / "b"
        a.mkdir()
        b.mkdir()
        _report(
            "snapshot: ioctl SNAP_CREATE_V2",
            _timed(lambda i: _btrfs.snapshot_subvolume(mnt / "parent", a, str(i)), count),
        )
        _report(
            "snapshot: btrfs subvolume snapshot",
            _timed(
                lambda i: run_command(["btrfs", "subvolume", "snapshot", str(mnt / "parent"), str(b / str(i))]), count
            ),
        )
        _report("delete:   ioctl SNAP_DESTROY", _timed(lambda i: _btrfs.delete_subvolume(a, str(i)), count))
        _report(
            "delete:   btrfs subvolume delete",
            _timed(lambda i: run_command(["btrfs", "subvolume", "delete", str(b / str(i))]), count),
        )


if __name__ == "__main__":
    main()
