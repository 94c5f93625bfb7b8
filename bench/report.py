"""Results: one record per measured command, medians, ratios, the plain-text table and the JSON file."""

from __future__ import annotations

import json
import platform
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Column order of the table; the first is "layerstore".
TOOLS = ("ls-api", "ls-cli", "cs", "tar")
TOOL_TITLES = {"ls-api": "layerstore", "ls-cli": "ls CLI", "cs": "c-storage", "tar": "GNU tar/cat"}


@dataclass
class Record:
    """One measured run of one tool doing one operation."""

    driver: str
    dataset: str
    op: str
    tool: str
    run: int
    seconds: float | None
    maxrss_kb: int | None
    ok: bool
    error: str = ""
    inner_seconds: float | None = None  # time inside the operation, without interpreter start-up
    sha_ok: bool | None = None  # exports: the output equals the imported tar (compared, or by sha256 in old files)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """Everything one benchmark invocation measured and noticed."""

    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, record: Record) -> Record:
        """Append `record` and print a progress line."""
        self.records.append(record)
        if record.ok:
            sha = "" if record.sha_ok is None else (" same bytes" if record.sha_ok else " OUTPUT DIFFERS")
            print(f"    {record.driver:7s} {record.dataset:10s} {record.op:12s} {record.tool:6s} run {record.run}: "
                  f"{record.seconds:8.3f} s  {(record.maxrss_kb or 0) / 1024:7.1f} MB{sha}", flush=True)
        else:
            print(f"    {record.driver:7s} {record.dataset:10s} {record.op:12s} {record.tool:6s} run {record.run}: "
                  f"FAILED {record.error}", flush=True)
        return record

    def note(self, text: str) -> None:
        """Remember a remark for the report (and print it now)."""
        self.notes.append(text)
        print(f"NOTE: {text}", flush=True)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def summarise(results: Results) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """{(driver, dataset, op): {tool: {"seconds": median, "maxrss_mb": max, "inner": median, ...}}}."""
    groups: dict[tuple[str, str, str, str], list[Record]] = defaultdict(list)
    for r in results.records:
        groups[(r.driver, r.dataset, r.op, r.tool)].append(r)
    out: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for (driver, dataset, op, tool), recs in groups.items():
        good = [r for r in recs if r.ok]
        inner = [r.inner_seconds for r in good if r.inner_seconds is not None]
        out[(driver, dataset, op)][tool] = {
            "runs": len(good),
            "failed": len(recs) - len(good),
            "error": next((r.error for r in recs if not r.ok), ""),
            "seconds": _median([r.seconds for r in good if r.seconds is not None]),
            "inner": _median(inner),
            "maxrss_mb": max(((r.maxrss_kb or 0) / 1024 for r in good), default=None),
            "sha_ok": None if all(r.sha_ok is None for r in good) else all(r.sha_ok is not False for r in good),
        }
    return out


def table(results: Results) -> str:
    """The plain-text report: one block per driver, medians, peak RSS, ratios, then notes."""
    summary = summarise(results)
    lines: list[str] = []
    m = results.meta
    lines.append(f"layerstore benchmark  {m.get('date', '')}  host {m.get('host', '')}  nproc {m.get('nproc', '')}  "
                 f"kernel {m.get('kernel', '')}  runs {m.get('runs', '')}{'  QUICK' if m.get('quick') else ''}")
    for ds in m.get("datasets", []):
        lines.append(f"  dataset {ds}")
    lines.append("Times: median wall time of the whole process; peak: max RSS of the process (MB);")
    lines.append("ls/cs and ls/tar: ratio of layerstore (Python API process) to containers-storage / GNU tar;")
    lines.append("cli/cs and cli/tar: the same for the `layerstore` command, start-up included (what issue goals use).")
    if m.get("export_check") == "bytes":
        lines.append("Export floor is `cat` of the uncompressed tar; every export is compared with it, byte for byte,")
        lines.append("as it arrives (read from the page cache; a fraction of what hashing the stream would cost).")
    else:
        lines.append("Export floor is `cat` of the uncompressed tar; every export is checked by sha256 against the")
        lines.append("input (the benchmark hashes every export stream at ~1 GB/s, which bounds every export alike).")
    same = "same bytes" if m.get("export_check") == "bytes" else "sha256 ok"
    drivers = list(dict.fromkeys(k[0] for k in summary))
    header = (f"{'dataset':10s} {'op':12s} " + " ".join(f"{TOOL_TITLES[t]:>11s}" for t in TOOLS)
              + f" {'ls/cs':>6s} {'ls/tar':>6s} {'cli/cs':>6s} {'cli/tar':>7s}"
              + f"  {'peak MB ls/cli/cs/tar':>24s}  {'inner':>7s}  check")
    for driver in drivers:
        lines.append("")
        runs = m.get("zfs_runs", m.get("runs")) if driver == "zfs" else m.get("runs")
        lines.append(f"== driver {driver} on {m.get('backing', {}).get(driver, '?')}, {runs} run(s) each")
        lines.append(header)
        lines.append("-" * len(header))
        for (d, dataset, op), tools in summary.items():
            if d != driver or op.startswith("image "):  # the images block below has its own columns
                continue
            secs = {t: tools.get(t, {}).get("seconds") for t in TOOLS}
            peaks = "/".join(
                f"{tools[t]['maxrss_mb']:.0f}" if t in tools and tools[t]["maxrss_mb"] is not None else "-"
                for t in TOOLS
            )
            checks = []
            for t in TOOLS:
                info = tools.get(t)
                if info is None:
                    continue
                if info["failed"]:
                    checks.append(f"{t} FAILED")
                if info["sha_ok"] is False:
                    checks.append(f"{t} OUTPUT DIFFERS")
            if not checks and any(tools.get(t, {}).get("sha_ok") for t in TOOLS):
                checks.append(same)
            lines.append(
                f"{dataset:10s} {op:12s} " + " ".join(f"{_fmt_s(secs[t]):>11s}" for t in TOOLS)
                + f" {_fmt_ratio(secs['ls-api'], secs['cs']):>6s} {_fmt_ratio(secs['ls-api'], secs['tar']):>6s}"
                + f" {_fmt_ratio(secs['ls-cli'], secs['cs']):>6s} {_fmt_ratio(secs['ls-cli'], secs['tar']):>7s}"
                + f"  {peaks:>24s}  {_fmt_s(tools.get('ls-api', {}).get('inner')):>7s}  {', '.join(checks)}"
            )
    chains = [r for r in results.records if r.op == "chain" and r.ok and r.extra]
    if chains:
        lines.append("")
        lines.append("Chains (per step; create times of layers 1, 50, 100, ...):")
        for r in chains:
            steps = f"create total {r.extra.get('create_total', 0):.2f}s"
            times = r.extra.get("create_times") or []
            if times:
                marks = [0, *range(max(1, len(times) // 10) - 1, len(times), max(1, len(times) // 10))]
                steps += " [" + " ".join(f"{i + 1}:{times[i] * 1000:.1f}ms" for i in sorted(set(marks))) + "]"
            mount, unmount = r.extra.get("mount", 0) * 1000, r.extra.get("unmount", 0) * 1000
            removal = r.extra.get("remove_total", 0)
            steps += f", mount top {mount:.1f}ms, unmount {unmount:.1f}ms, remove all {removal:.2f}s"
            lines.append(f"  {r.driver:7s} {r.dataset:8s} {TOOL_TITLES[r.tool]:10s} run {r.run}: {steps}")
    from .images import images_table

    lines.extend(images_table(results))
    failures = [(k, t, info["error"]) for k, tools in summary.items() for t, info in tools.items() if info["failed"]]
    if failures:
        lines.append("")
        lines.append("Failures (first error of each):")
        for (driver, dataset, op), tool, error in failures:
            lines.append(f"  {driver} {dataset} {op} {tool}: {error[:300]}")
    if results.notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"  - {n}" for n in results.notes)
    return "\n".join(lines) + "\n"


def write(results: Results, directory: Path, text: str) -> Path:
    """Write the JSON results (and the table) under `directory`; return the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = results.meta.get("stamp", "run")
    path = directory / f"bench-{stamp}.json"
    summary = {f"{d}/{ds}/{op}": tools for (d, ds, op), tools in summarise(results).items()}
    payload = {
        "meta": results.meta,
        "notes": results.notes,
        "summary": summary,
        "records": [asdict(r) for r in results.records],
    }
    path.write_text(json.dumps(payload, indent=1, default=str))
    (directory / f"bench-{stamp}.txt").write_text(text)
    return path


def load(path: Path) -> Results:
    """Read a results JSON written by `write` back (to re-render its table)."""
    payload = json.loads(path.read_text())
    records = [Record(**r) for r in payload["records"]]
    return Results(records=records, notes=payload.get("notes", []), meta=payload.get("meta", {}))


def machine() -> dict[str, str]:
    """Host facts for the report header."""
    import os

    return {"host": platform.node(), "nproc": str(os.cpu_count()), "kernel": platform.release(),
            "python": platform.python_version()}


if __name__ == "__main__":
    import sys

    # python -m bench.report RESULTS.json: print the table of an earlier run again.
    print(table(load(Path(sys.argv[1]))), end="")
