"""Fixed cost of a ``layerstore`` command: start-up times, medians of many runs.

    .venv/bin/python -m bench.startup [--runs N] [--no-bytecode]

Measures, as separate processes of the benchmark's interpreter, each `--runs`
times (default 15), with ``PYTHONDONTWRITEBYTECODE=1`` as tox and many
packagers set it (so a run finds only the byte-code that the installation
compiled):

- ``python -c pass``: the interpreter alone, the floor;
- ``python -c 'import layerstore'``;
- ``layerstore --help``;
- ``layerstore ls`` where there is no store yet, and on a store holding one image;
- ``layerstore import`` of a one-file layer (a fresh store each time: opening
  the driver, the recording worker, one registration).

``--no-bytecode`` first moves the layerstore sources' ``__pycache__``
directories aside (restored afterwards), to show what a start costs when the
installation compiled nothing.  Prints median and minimum wall seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "core" / "src", *sorted((REPO / "plugins").glob("*/src"))]


def _layerstore() -> str:
    return str(Path(sys.executable).with_name("layerstore"))


def _tiny_tar(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return elapsed


@contextlib.contextmanager
def _without_bytecode() -> Iterator[None]:
    """Move every ``__pycache__`` under the layerstore sources aside, and back afterwards."""
    aside = Path(tempfile.mkdtemp(prefix="bench-pyc-"))
    moved: list[tuple[Path, Path]] = []
    try:
        for src in SOURCES:
            for cache in sorted(src.rglob("__pycache__")):
                target = aside / str(len(moved))
                shutil.move(str(cache), target)
                moved.append((cache, target))
        yield
    finally:
        for cache, target in moved:
            if not cache.exists():
                shutil.move(str(target), cache)
        shutil.rmtree(aside, ignore_errors=True)


def measure(runs: int, work: Path) -> list[tuple[str, list[float]]]:
    """Time every command `runs` times, interleaved; return (label, seconds of each run)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "LAYERSTORE_DRIVER": "vfs"}
    ls = _layerstore()
    layer = work / "one-file.tar"
    _tiny_tar(layer)
    filled = work / "filled"
    subprocess.run([ls, "--root", str(filled), "import", "-q", str(layer)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    commands: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import layerstore'": [sys.executable, "-c", "import layerstore"],
        "layerstore --help": [ls, "--help"],
        "layerstore ls (no store)": [ls, "--root", str(work / "none"), "ls"],
        "layerstore ls (1 image)": [ls, "--root", str(filled), "ls"],
        "layerstore import (1 file)": [],
    }
    times: dict[str, list[float]] = {label: [] for label in commands}
    for run in range(runs):
        for label, argv in commands.items():
            if label.startswith("layerstore import"):
                root = work / f"import-{run}"
                times[label].append(_time([ls, "--root", str(root), "import", "-q", str(layer)], env))
                shutil.rmtree(root, ignore_errors=True)
            else:
                times[label].append(_time(argv, env))
    return list(times.items())


def main(argv: list[str] | None = None) -> int:
    """Measure and print the start-up table."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-bytecode", action="store_true",
                        help="move the sources' __pycache__ aside first (an installation that compiled nothing)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        with _without_bytecode() if args.no_bytecode else contextlib.nullcontext():
            rows = measure(args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kind = "without" if args.no_bytecode else "with"
    print(f"start-up, {kind} byte-code of the layerstore sources, PYTHONDONTWRITEBYTECODE=1, "
          f"{args.runs} runs (median / min)")
    for label, values in rows:
        print(f"  {label:<32} {statistics.median(values) * 1000:7.0f} ms {min(values) * 1000:7.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
