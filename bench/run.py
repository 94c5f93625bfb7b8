"""Benchmark driver: ``.venv/bin/python -m bench [--quick] [--drivers ...] [--datasets ...] [--runs N]``.

For each driver, on a fresh backing filesystem of its kind (see
`bench.filesystems`), for each dataset, alternating tools within every run:
layerstore import/export through the Python API (a child process of
`bench.layerstore_runner`) and through the ``layerstore`` CLI,
containers-storage ``import-layer``/``diff``, and GNU tar ``-x``/``cat``.
Then create-child, a 50-layer chain, and (overlay) a 500-layer chain.
Prints a table, writes JSON and text to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import datasets as ds_mod
from . import images as images_mod
from .datasets import Dataset
from .filesystems import FSTYPE_OF_DRIVER, abort_fuse_mounts, backing_filesystem, leftovers
from .layerstore_runner import cli_argv, parse_inner, runner_argv
from .measure import DEFAULTS, GNU_TIME, STATE, Measurement, run_measured
from .peers import ContainersStorage, cat_file, tar_extract
from .report import Record, Results, machine, table, write

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
ALL_DRIVERS = ("vfs", "overlay", "btrfs", "zfs")


class BackendHung(Exception):
    """A command timed out: the backing filesystem is assumed hung, the round is abandoned."""


def _last_line(m: Measurement) -> str:
    if m.timed_out:
        raise BackendHung(m.failure())
    lines = [line.strip() for line in m.stdout.splitlines() if line.strip()]
    if not m.ok or not lines:
        raise RuntimeError(m.failure())
    return lines[-1].split()[-1]


def layerstore_status(driver: str) -> tuple[bool, bool, str]:
    """(Python API usable, CLI usable, why not) for `driver`, checked in a child process."""
    probe = (
        "import sys\n"
        "from layerstore import available_drivers\n"
        "import layerstore.graph, layerstore.archive.apply, layerstore.tarsplit\n"
        f"sys.exit(0 if {driver!r} in available_drivers() else 3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if proc.returncode == 3:
        return False, False, f"layerstore driver {driver!r} is not installed"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return False, False, f"layerstore parts missing: {tail[0]}"
    cli = Path(sys.executable).with_name("layerstore")
    cli_ok = cli.exists() and subprocess.run([str(cli), "--help"], capture_output=True, check=False).returncode == 0
    return True, cli_ok, "" if cli_ok else "layerstore CLI not available"


class Round:
    """The measurements of one driver on one fresh backing filesystem."""

    def __init__(self, results: Results, driver: str, mnt: Path, args: argparse.Namespace) -> None:
        self.results = results
        self.driver = driver
        self.mnt = mnt
        self.args = args
        self.options: dict[str, str] = dict(args.option)
        self.ls_root = mnt / "layerstore"
        self.cli_root = mnt / "layerstore-cli"
        self.cs = ContainersStorage(mnt / "cs" / "graph", mnt / "cs" / "run", driver)
        self.tools: list[str] = []
        api, cli, why = layerstore_status(driver)
        if api:
            self.tools.append("ls-api")
        if cli:
            self.tools.append("ls-cli")
        if why:
            results.note(f"{driver}: {why}; layerstore columns are empty for this driver")
        cs_problem = self.cs.probe()
        if cs_problem is None:
            self.tools.append("cs")
        else:
            results.note(f"{driver}: containers-storage --storage-driver {driver} cannot run on "
                         f"{FSTYPE_OF_DRIVER[driver]}: {cs_problem}")
        self.cs.shutdown()
        self.tools.append("tar")

    @property
    def hung(self) -> bool:
        """True once a command timed out: the filesystem is not touched any more."""
        return STATE["timed_out"]

    # ---- helpers -------------------------------------------------------
    def record(self, dataset: str, op: str, tool: str, run: int, m: Measurement | None, *,
               error: str = "", sha_ok: bool | None = None, inner: float | None = None,
               extra: dict[str, Any] | None = None) -> Record:
        if m is None:
            return self.results.add(Record(self.driver, dataset, op, tool, run, None, None, False, error))
        ok = m.ok and not error
        if m.timed_out:
            self.results.add(Record(self.driver, dataset, op, tool, run, m.seconds, None, False, m.failure()))
            raise BackendHung(m.failure())
        return self.results.add(Record(
            self.driver, dataset, op, tool, run, m.seconds, m.maxrss_kb, ok,
            error or ("" if m.ok else m.failure()), inner, sha_ok if ok else None, extra or {},
        ))

    def ls_import(self, tool: str, tar: Path, parent: str | None) -> Measurement:
        extra = ["--parent", parent] if parent else []
        if tool == "ls-api":
            return run_measured(runner_argv("import", self.ls_root, self.driver, self.options, str(tar), *extra))
        return run_measured(cli_argv(self.cli_root, self.driver, self.options, "import", *extra, str(tar)))

    def ls_export(self, tool: str, image: str, expected: Path) -> Measurement:
        if tool == "ls-api":
            return run_measured(runner_argv("export", self.ls_root, self.driver, self.options, image),
                                compare_stdout=expected)
        return run_measured(cli_argv(self.cli_root, self.driver, self.options, "export", image),
                            compare_stdout=expected)

    def ls_wipe(self, tool: str) -> None:
        if self.hung:
            return
        root = self.ls_root if tool == "ls-api" else self.cli_root
        if root.exists():
            m = run_measured(runner_argv("wipe", root, self.driver, self.options))
            if not m.ok:
                print(f"    (wipe of {root} failed: {m.failure()})", flush=True)
        self._rmtree(root)

    def cs_destroy(self) -> None:
        if not self.hung:
            self.cs.destroy()

    def _rmtree(self, path: Path) -> None:
        if self.hung:
            return
        for mnt in sorted(leftovers(path), key=len, reverse=True):
            if mnt.startswith("/"):
                self.results.note(f"{self.driver}: left mounted after a run, unmounting: {mnt}")
                subprocess.run(["umount", "--lazy", mnt], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)

    # ---- import / export ----------------------------------------------
    def import_export(self, ds: Dataset, tool: str, run: int) -> None:
        plain = Path(str(ds.extra.get("plain", ds.path)))  # what every export must give back
        if tool == "tar":
            dest = self.mnt / "tar" / f"r{run}"
            try:
                if ds.parent is not None:
                    tar_extract(ds.parent.path, dest)
                m = tar_extract(ds.path, dest)
                self.record(ds.name, "import", tool, run, m)
                e = cat_file(plain)
                self.record(ds.name, "export", tool, run, e, sha_ok=e.stdout_same)
            finally:
                self._rmtree(self.mnt / "tar")
            return
        if tool == "cs":
            try:
                parent = None
                if ds.parent is not None:
                    parent = self.cs.layer_id(self.cs.import_layer(ds.parent.path))
                m = self.cs.import_layer(ds.path, parent)
                self.record(ds.name, "import", tool, run, m)
                if m.ok:
                    e = self.cs.export_layer(self.cs.layer_id(m), plain)
                    self.record(ds.name, "export", tool, run, e, sha_ok=e.stdout_same)
            finally:
                self.cs_destroy()
            return
        try:
            parent = None
            if ds.parent is not None:
                parent = _last_line(self.ls_import(tool, ds.parent.path, None))
            m = self.ls_import(tool, ds.path, parent)
            self.record(ds.name, "import", tool, run, m, inner=parse_inner(m).get("seconds"))
            if m.ok:
                e = self.ls_export(tool, _last_line(m), plain)
                self.record(ds.name, "export", tool, run, e, sha_ok=e.stdout_same,
                            inner=parse_inner(e).get("seconds"))
        except RuntimeError as exc:
            self.record(ds.name, "import", tool, run, None, error=f"setup: {exc}")
        finally:
            self.ls_wipe(tool)

    # ---- layers: create-child and chains --------------------------------
    def create_child(self, parent_ds: Dataset) -> None:
        label = f"on-{parent_ds.name}"
        if "ls-api" in self.tools:
            try:
                parent = _last_line(self.ls_import("ls-api", parent_ds.path, None))
                for run in range(self.args.runs):
                    m = run_measured(runner_argv("create-child", self.ls_root, self.driver, self.options, parent))
                    self.record(label, "create-child", "ls-api", run, m, inner=parse_inner(m).get("seconds"))
                    if m.ok:
                        run_measured(runner_argv("remove", self.ls_root, self.driver, self.options, _last_line(m)))
            except RuntimeError as exc:
                self.record(label, "create-child", "ls-api", 0, None, error=f"setup: {exc}")
            finally:
                self.ls_wipe("ls-api")
        if "cs" in self.tools:
            try:
                parent = self.cs.layer_id(self.cs.import_layer(parent_ds.path))
                for run in range(self.args.runs):
                    m = self.cs.create_layer(parent)
                    self.record(label, "create-child", "cs", run, m)
                    if m.ok:
                        self.cs.delete_layer(self.cs.layer_id(m))
            finally:
                self.cs_destroy()

    def chain(self, base_ds: Dataset | None, depth: int, tools: list[str], runs: int) -> None:
        label = f"chain{depth}"
        if "ls-api" in tools and "ls-api" in self.tools:
            for run in range(runs):
                try:
                    base = _last_line(self.ls_import("ls-api", base_ds.path, None)) if base_ds else None
                    argv = runner_argv("chain", self.ls_root, self.driver, self.options, str(depth),
                                       *(["--base", base] if base else []), "--verbose")
                    m = run_measured(argv)
                    inner = parse_inner(m)
                    self.record(label, "chain", "ls-api", run, m, inner=inner.get("seconds"),
                                extra={k: v for k, v in inner.items() if k != "seconds"})
                    for line in m.stderr.splitlines():
                        if line.startswith("  "):
                            print(f"      {line.strip()}", flush=True)
                except RuntimeError as exc:
                    self.record(label, "chain", "ls-api", run, None, error=f"setup: {exc}")
                finally:
                    self.ls_wipe("ls-api")
        if "cs" in tools and "cs" in self.tools:
            for run in range(runs):
                try:
                    self._cs_chain(label, base_ds, depth, run)
                finally:
                    self.cs_destroy()

    def _cs_chain(self, label: str, base_ds: Dataset | None, depth: int, run: int) -> None:
        """The same chain through containers-storage: one process per step; times and peaks add up."""
        steps: list[Measurement] = []
        parent = self.cs.layer_id(self.cs.import_layer(base_ds.path)) if base_ds else None
        ids: list[str] = []
        create0 = time.perf_counter()
        for _ in range(depth):
            m = self.cs.create_layer(parent)
            steps.append(m)
            if not m.ok:
                self.record(label, "chain", "cs", run, m)
                return
            parent = self.cs.layer_id(m)
            ids.append(parent)
        create_total = time.perf_counter() - create0
        assert parent is not None
        mount = self.cs.mount(parent)
        unmount = self.cs.unmount(parent)
        steps += [mount, unmount]
        remove0 = time.perf_counter()
        for layer in reversed(ids):
            steps.append(self.cs.delete_layer(layer))
        remove_total = time.perf_counter() - remove0
        bad = next((s for s in steps if not s.ok), None)
        total = Measurement(
            argv=["containers-storage", "chain"], seconds=sum(s.seconds for s in steps),
            maxrss_kb=max(s.maxrss_kb for s in steps), returncode=0 if bad is None else bad.returncode,
            stdout="", stdout_same=None, stdout_bytes=0, stderr="" if bad is None else bad.stderr,
        )
        self.record(label, "chain", "cs", run, total, extra={
            "create_total": create_total, "mount": mount.seconds, "unmount": unmount.seconds,
            "remove_total": remove_total,
        })


def _rotate(items: list[str], n: int) -> list[str]:
    n %= max(1, len(items))
    return items[n:] + items[:n]


def run_driver(
    results: Results, driver: str, datasets: list[Dataset], helpers: list[Dataset], args: argparse.Namespace
) -> None:
    """All measurements of one driver, on its own fresh filesystem (torn down on exit)."""
    if driver == "zfs" and args.zfs_runs:
        args = argparse.Namespace(**{**vars(args), "runs": args.zfs_runs})
        results.meta["zfs_runs"] = args.runs
    workdir = Path(args.workdir) / driver
    print(f"\n=== {driver}: fresh {FSTYPE_OF_DRIVER[driver]} ({args.size_mb} MiB) under {workdir}", flush=True)
    results.meta.setdefault("backing", {})[driver] = f"fresh loop {FSTYPE_OF_DRIVER[driver]}" if driver != "zfs" \
        else "fresh zfs-fuse pool (sparse file vdev)"
    try:
        fs_cm = backing_filesystem(workdir, driver, args.size_mb)
        with fs_cm as mnt:
            STATE["timed_out"] = False
            try:
                _measure_round(results, driver, mnt, datasets, helpers, args)
            except Exception as exc:
                if not STATE["timed_out"]:
                    raise
                aborted = abort_fuse_mounts(workdir)
                results.note(f"{driver}: a command hung ({exc}); round abandoned"
                             + (f", FUSE connections aborted: {aborted}" if aborted else ""))
    except Exception as exc:  # one broken backend must not stop the other drivers
        results.note(f"{driver}: round aborted: {type(exc).__name__}: {exc}")
    left = leftovers(workdir)
    if left:
        results.note(f"{driver}: LEFT BEHIND after teardown: {left}")


def _measure_round(
    results: Results, driver: str, mnt: Path, datasets: list[Dataset], helpers: list[Dataset],
    args: argparse.Namespace,
) -> None:
    """Everything measured on one driver's filesystem `mnt`."""
    rnd = Round(results, driver, mnt, args)
    print(f"  tools: {', '.join(rnd.tools)}", flush=True)
    # Warm the interpreter's imports once; its RSS is the floor of every layerstore figure.
    if "ls-api" in rnd.tools:
        baseline = run_measured([sys.executable, "-c", f"import layerstore.graph, layerstore_{driver}"])
        if baseline.ok and not results.meta.get("ls_baseline_mb"):
            results.meta["ls_baseline_mb"] = round(baseline.maxrss_kb / 1024, 1)
            results.note(f"baseline: a Python process that only imports layerstore.graph and the {driver} plugin "
                         f"peaks at {baseline.maxrss_kb / 1024:.0f} MB (the floor of the layerstore peak-MB figures)")
    for ds in datasets:
        ds_mod.warm(ds)
        print(f"  -- {ds.describe()}", flush=True)
        for run in range(args.runs):
            for tool in _rotate(rnd.tools, run):
                rnd.import_export(ds, tool, run)
    by_name = {d.name: d for d in helpers}
    if "child" in args.ops:
        parent = by_name.get("rootfs") or by_name.get("genroot")
        if parent is not None:
            print(f"  -- create-child on {parent.name}", flush=True)
            rnd.create_child(parent)
    if "chain50" in args.ops:
        base = next(iter(d.parent for d in helpers if d.parent is not None), None)
        print(f"  -- 50-layer chain on {base.path.name if base else 'nothing'}", flush=True)
        rnd.chain(base, 50, ["ls-api", "cs"], args.runs)
    if "chain500" in args.ops and driver == "overlay":
        print("  -- 500-layer chain (overlay)", flush=True)
        rnd.chain(None, 500, ["ls-api"], 1)
    rnd.cs.shutdown()
    if "images" in args.ops:
        _measure_images(results, driver, mnt, by_name, args)


def _measure_images(results: Results, driver: str, mnt: Path, by_name: dict[str, Dataset],
                    args: argparse.Namespace) -> None:
    if driver == "zfs":
        results.note("images section not run on zfs (podman and skopeo have no zfs-fuse store to compare with)")
        return
    whiteout = by_name["whiteout"]
    assert whiteout.parent is not None
    base = by_name["genroot"] if args.quick else by_name["rootfs"]
    images_mod.measure(results, driver, mnt, {"small": [whiteout.parent, whiteout], "rootfs": [base, whiteout]},
                       args.runs, dict(args.option), Path(args.workdir) / "images")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="1 run, smaller generated datasets (smoke test)")
    p.add_argument("--drivers", default=",".join(ALL_DRIVERS), help="comma-separated (default: all four)")
    p.add_argument("--datasets", default=",".join(ds_mod.ALL_DATASETS),
                   help=f"comma-separated (default: {','.join(ds_mod.ALL_DATASETS)})")
    p.add_argument("--ops", default="io,child,chain50,chain500,images",
                   help="comma-separated parts: io (import/export), child, chain50, chain500, images "
                        "(load/save/pull/push against podman and skopeo; `--ops images` runs only that)")
    p.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3, --quick 1)")
    p.add_argument("--zfs-runs", type=int, default=None,
                   help="runs on zfs-fuse, which is several times slower than the others (default: --runs)")
    p.add_argument("--size-mb", type=int, default=None, help="size of each backing filesystem (MiB)")
    p.add_argument("--workdir", default=str(BENCH_DIR / "data" / "work"),
                   help="where the sparse images live (default bench/data/work)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds before a measured command counts as hung and is killed (default 300)")
    p.add_argument("-o", "--option", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="layerstore driver option k=v (repeatable)")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.size_mb = args.size_mb or (2048 if args.quick else 8192)
    args.ops = set(args.ops.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the datasets, measure every driver, print and save the table."""
    args = parse_args(argv)
    DEFAULTS["timeout"] = args.timeout
    drivers = [d for d in args.drivers.split(",") if d]
    for d in drivers:
        if d not in ALL_DRIVERS:
            raise SystemExit(f"unknown driver {d!r}; choose from {', '.join(ALL_DRIVERS)}")
    names = [n for n in args.datasets.split(",") if n] if "io" in args.ops else []
    for extra in ("rootfs", "whiteout"):  # parents of create-child and of the chains
        if extra not in names and ({"child", "chain50"} & args.ops):
            names.append(extra)
    for extra in ("genroot" if args.quick else "rootfs", "whiteout"):  # the layers of the images section
        if extra not in names and "images" in args.ops:
            names.append(extra)
    results = Results()
    now = datetime.datetime.now(datetime.UTC)
    results.meta.update(machine())
    results.meta.update(date=now.strftime("%Y-%m-%d %H:%M UTC"), stamp=now.strftime("%Y%m%dT%H%M%S"),
                        runs=args.runs, quick=args.quick, drivers=drivers)
    started = time.monotonic()
    if GNU_TIME is None:
        results.note("GNU /usr/bin/time not found (apt-get install time): peak RSS figures include the "
                     "benchmark's own ~30 MB that a forked child inherits")
    with _sigterm_as_interrupt():
        datasets = ds_mod.build_datasets(names, args.quick)
        results.meta["datasets"] = [d.describe() for d in datasets]
        results.meta["export_check"] = "bytes"  # compared with the input as it arrives (files before: sha256)
        for d in datasets:
            if d.note:
                results.note(f"dataset {d.name}: {d.note}")
        wanted = set(args.datasets.split(","))
        io_sets = [d for d in datasets if d.name in wanted] if "io" in args.ops else []
        try:
            for driver in drivers:
                run_driver(results, driver, io_sets, datasets, args)
        except KeyboardInterrupt:
            results.note("interrupted; partial results")
        finally:
            results.meta["elapsed_s"] = round(time.monotonic() - started)
            _issue_notes(results)
            text = table(results)
            print("\n" + text)
            path = write(results, RESULTS_DIR, text)
            (RESULTS_DIR / "latest.txt").write_text(text)
            print(f"results: {path} and {RESULTS_DIR / 'latest.txt'}")
    return 0


def _issue_notes(results: Results) -> None:
    """The figures the issues ask for, as sentences."""
    from .report import summarise

    s = summarise(results)

    def get(driver: str, dataset: str, op: str, tool: str, key: str) -> Any:
        return s.get((driver, dataset, op), {}).get(tool, {}).get(key)

    t_ls = get("vfs", "genroot", "import", "ls-api", "seconds")
    t_tar = get("vfs", "genroot", "import", "tar", "seconds")
    m_ls, m_tar = (get("vfs", "genroot", "import", "ls-api", "maxrss_mb"),
                   get("vfs", "genroot", "import", "tar", "maxrss_mb"))
    if t_ls and t_tar and m_ls and m_tar:
        results.notes.append(
            f"issue 2 (apply generated rootfs-like tar on vfs): wall {t_ls:.2f} s vs GNU tar {t_tar:.2f} s "
            f"= {t_ls / t_tar:.2f}x; peak memory {m_ls:.0f} MB vs {m_tar:.0f} MB = {m_ls / m_tar:.1f}x")
    fmt: Callable[[Any], str] = lambda v: "-" if v is None else f"{v:.0f} MB"  # noqa: E731
    for driver in results.meta.get("drivers", []):
        imp = get(driver, "layer1g", "import", "ls-api", "maxrss_mb")
        exp = get(driver, "layer1g", "export", "ls-api", "maxrss_mb")
        e_ls, e_cat = get(driver, "layer1g", "export", "ls-api", "seconds"), get(driver, "layer1g", "export", "tar",
                                                                                  "seconds")
        if imp is None and exp is None:
            continue
        ok = imp is not None and exp is not None and imp < 100 and exp < 100
        ratio = f"{e_ls / e_cat:.2f}x" if e_ls and e_cat else "-"
        size = next((d for d in results.meta.get("datasets", []) if d.startswith("layer1g:")), "layer1g")
        results.notes.append(
            f"issue 3 ({driver}, {size.split(',')[0]}): peak RSS import {fmt(imp)}, export {fmt(exp)} "
            f"(goal < 100 MB: {'PASS' if ok else 'FAIL'}); export time / cat = {ratio}")


if __name__ == "__main__":
    sys.exit(main())
