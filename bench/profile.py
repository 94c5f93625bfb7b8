"""Where the time of ``layerstore import`` / ``export`` goes: sampled profiles, summarised per 10 %.

    .venv/bin/python -m bench.profile [--datasets small,rootfs,big] [--driver vfs] [--rate 500]

Runs the ``layerstore`` command under py-spy (``pip install py-spy``: a
sampling profiler that attaches from outside, so the command runs unchanged,
its forked recording worker included) on a fresh backing filesystem of the
driver's kind (`bench.filesystems`), the export piped to this process.  Idle
samples count too (a process waiting for the disk or a pipe is part of the wall
time).  Each sample is charged to the innermost frame in layerstore's own code
(so ``os.write`` called by the extractor counts as the extractor's), start-up to
"imports".  Only the main thread of each process is summarised: helper threads
(hashing, read-ahead) run beside it.  The summary prints, per process, the
functions (with their busiest lines) that together make up 90 % of that
process's samples, and writes the raw stacks to
``bench/results/profile-<stamp>/`` for flame graphs.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .datasets import build_datasets
from .filesystems import backing_filesystem

BENCH_DIR = Path(__file__).resolve().parent
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_OWN = ("layerstore/", "layerstore_")


def _py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    if exe.exists():
        return str(exe)
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _charge(frames: list[str]) -> tuple[str, str]:
    """The bucket of one sampled stack (outermost frame first), and the line in it."""
    if any("_find_and_load" in f for f in frames):
        return "start-up: imports", ""
    own: tuple[str, str] | None = None
    for frame in frames:
        m = _FRAME.match(frame)
        if m and m.group("file").startswith(_OWN):
            own = f"{m.group('func')} ({m.group('file')})", m.group("line") or ""
    if own is None:
        leaf = _FRAME.match(frames[-1]) if frames else None
        return f"other: {leaf.group('func') if leaf else (frames[-1] if frames else '?')}", ""
    return own


def summarise(raw: Path, share: float = 0.9) -> list[str]:
    """Lines: per process, the buckets covering `share` of its samples, largest first, with their top lines."""
    per_process: dict[str, Counter[str]] = {}
    lines_of: dict[str, Counter[str]] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # A child's stacks sit under its parent's "process PID:..." frame: the last one names the process.
        process = "process"
        while frames and frames[0].startswith("process "):
            process = frames.pop(0).split(":", 1)[0]
        if not frames or not frames[0].startswith("<module>"):
            continue  # a helper thread (hashing, read-ahead): its work overlaps the main thread's
        bucket, lineno = _charge(frames)
        per_process.setdefault(process, Counter())[bucket] += int(count)
        if lineno:
            lines_of.setdefault(bucket, Counter())[lineno] += int(count)
    ranked = sorted(per_process.items(), key=lambda kv: -sum(kv[1].values()))
    out = []
    for n, (_process, counter) in enumerate(ranked):
        total = sum(counter.values())
        role = "main process" if n == 0 else "child process (recording worker)"
        out.append(f"  {role}: {total} samples")
        seen = 0
        for bucket, count in counter.most_common():
            if seen >= share * total:
                break
            seen += count
            where = lines_of.get(bucket, Counter()).most_common(2)
            at = f"  [line {', '.join(f'{ln}: {100 * c // count}%' for ln, c in where)}]" if where else ""
            out.append(f"    {100 * count / total:5.1f} %  {bucket}{at}")
    return out


def _record(out: Path, argv: list[str], rate: int, stdout: int | None) -> subprocess.CompletedProcess[bytes]:
    cmd = [_py_spy(), "record", "--idle", "--subprocesses", "--nonblocking", "--format", "raw",
           "--rate", str(rate), "--output", str(out), "--", *argv]
    proc = subprocess.run(cmd, stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed under py-spy: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def main(argv: list[str] | None = None) -> int:
    """Profile import and export of each dataset and print the summaries."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="small,rootfs,big")
    parser.add_argument("--driver", default="vfs")
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--size-mb", type=int, default=8192)
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "data" / "work-profile")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    outdir = BENCH_DIR / "results" / f"profile-{stamp}"
    outdir.mkdir(parents=True, exist_ok=True)
    layerstore = str(Path(sys.executable).with_name("layerstore"))
    report: list[str] = []
    for ds in build_datasets([d for d in args.datasets.split(",") if d], quick=False):
        with backing_filesystem(args.workdir, args.driver, args.size_mb) as mnt:
            base = [layerstore, "--root", str(mnt / "store"), "--driver", args.driver]
            imported = _record(outdir / f"{ds.name}-import.txt", [*base, "import", "-q", str(ds.path)],
                               args.rate, None)
            image = re.findall(r"\b[0-9a-f]{64}\b", imported.stdout.decode())[-1]
            subprocess.run(["sync"], check=True)
            with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as consumer:
                _record(outdir / f"{ds.name}-export.txt", [*base, "export", image], args.rate,
                        consumer.stdin.fileno() if consumer.stdin else None)
                if consumer.stdin:
                    consumer.stdin.close()
        for op in ("import", "export"):
            report.append(f"{ds.name} {op} ({args.driver}, {ds.describe()}):")
            report += summarise(outdir / f"{ds.name}-{op}.txt")
    text = "\n".join(report)
    (outdir / "summary.txt").write_text(text + "\n")
    print(text)
    print(f"raw stacks and summary: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
