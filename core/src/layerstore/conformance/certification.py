"""Certification of one driver by the conformance suite: probe first, count outcomes, say the verdict plainly.

A run certifies a driver when the driver opens, at least one test passes,
none fails or errors, no known bug is marked xfail, and every skip rests on
a requirement the driver answers for itself (a capability it does not
declare: ``requires quota: ...``).  A skip for any other reason (the
environment lacks root, a backend is missing) leaves the driver "not
certified", with the reason listed.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from .requirements import SKIP_PREFIX

__all__ = ["Certification", "ProbeResult", "not_opened_report", "probe_driver", "write_report"]


@attrs.frozen
class ProbeResult:
    """What opening the driver once told us."""

    capabilities: dict[str, Any]
    distribution: str | None
    version: str | None


def probe_driver(name: str, options: Mapping[str, str], root: str | os.PathLike[str] | None = None) -> ProbeResult:
    """Open driver `name` once on a throwaway home below `root` (default: a temporary directory), then close it.

    Raises the `layerstore.errors.LayerStoreError` that says why the driver
    cannot be opened (`DriverNotFound`, `DriverNotSupported`, `ConfigError`,
    `InvalidDriver`); any other failure of the factory becomes `InvalidDriver`.
    """
    from layerstore.drivers import available_drivers, load_driver
    from layerstore.errors import InvalidDriver, LayerStoreError
    from layerstore.kit import remove_tree

    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix=f"layerstore-probe-{name}-", dir=root)
    try:
        try:
            driver = load_driver(name, home, options)
        except LayerStoreError:
            raise
        except Exception as exc:
            raise InvalidDriver(f"driver {name!r} failed to open: {type(exc).__name__}: {exc}") from exc
        try:
            capabilities = attrs.asdict(driver.capabilities)
        finally:
            driver.cleanup()
    finally:
        remove_tree(home)
    distribution = available_drivers().get(name)
    version = None
    if distribution is not None:
        import importlib_metadata

        try:
            version = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            version = None
    return ProbeResult(capabilities, distribution, version)


def _reason(report: pytest.TestReport) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    if report.failed and longrepr is not None:
        text = getattr(report, "longreprtext", "") or str(longrepr)
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else None
    return None


class Certification:
    """The pytest plugin object of one certification run (registered by `layerstore.conformance.plugin`)."""

    def __init__(self, config: pytest.Config, driver_name: str) -> None:
        self.config = config
        self.driver_name = driver_name
        self.probe_result: ProbeResult | None = None
        self.not_opened: str | None = None
        self.outcomes: dict[str, tuple[str, str | None]] = {}

    # -- hooks -----------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Open the driver once; if it cannot be opened, stop before any test with that one reason."""
        from layerstore.errors import LayerStoreError

        from ._options import command_line_options

        try:
            self.probe_result = probe_driver(
                self.driver_name,
                command_line_options(self.config),
                self.config.getoption("--layerstore-root", None),
            )
        except LayerStoreError as exc:
            self.not_opened = str(exc)
            self._write_report()
            pytest.exit(f"not certified: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep one outcome per test: errors in setup or teardown, else the call's outcome."""
        nodeid = report.nodeid
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
                self.outcomes[nodeid] = (outcome, str(report.wasxfail) or None)
            else:
                self.outcomes[nodeid] = (report.outcome, _reason(report))
        elif report.failed:
            self.outcomes[nodeid] = ("error", _reason(report))
        elif report.skipped and report.when == "setup":
            if hasattr(report, "wasxfail"):
                self.outcomes[nodeid] = ("xfailed", str(report.wasxfail) or None)
            else:
                self.outcomes[nodeid] = ("skipped", _reason(report))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the JSON report; a run that does not certify never exits 0."""
        self._write_report()
        if not self.certified and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Skip reasons, grouped by requirement (the verdict comes last, at unconfigure)."""
        skips = collections.Counter(reason or "no reason given" for outcome, reason in self.outcomes.values()
                                    if outcome == "skipped")  # fmt: skip
        if skips:
            terminalreporter.section("layerstore: skipped tests and why", sep="-")
            for reason, count in sorted(skips.items()):
                terminalreporter.write_line(f"{count:4d} skipped: {reason}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The closing line of the whole run: the verdict."""
        if self.not_opened is not None:
            return  # pytest.exit has printed the reason
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(self.verdict, bold=True, green=self.certified, red=not self.certified)

    # -- the verdict -------------------------------------------------------------

    def _count(self) -> collections.Counter[str]:
        return collections.Counter(outcome for outcome, _ in self.outcomes.values())

    def _declared_skips(self) -> int:
        return sum(
            1
            for outcome, reason in self.outcomes.values()
            if outcome == "skipped" and (reason or "").startswith(SKIP_PREFIX)
        )

    @property
    def certified(self) -> bool:
        """True when the driver opened, something passed, and nothing failed or skipped for a reason of its own."""
        counts = self._count()
        return (
            self.not_opened is None
            and counts["passed"] > 0
            and counts["passed"] + self._declared_skips() == sum(counts.values())
        )

    @property
    def verdict(self) -> str:
        """The closing line: ``certified: N passed, M skipped for declared capabilities`` or ``not certified: ...``."""
        if self.not_opened is not None:
            return f"not certified: {self.not_opened}"
        counts = self._count()
        declared = self._declared_skips()
        if self.certified:
            return f"certified: {counts['passed']} passed, {declared} skipped for declared capabilities"
        parts = []
        for outcome, label in (
            ("failed", "failed"),
            ("error", "errors"),
            ("xfailed", "known bugs (xfail)"),
            ("xpassed", "unexpectedly passed (xpass)"),
        ):
            if counts[outcome]:
                parts.append(f"{counts[outcome]} {label}")
        other_skips = counts["skipped"] - declared
        if other_skips:
            parts.append(f"{other_skips} skipped for reasons other than declared capabilities")
        if not counts["passed"]:
            parts.append("no test passed")
        parts.append(f"{counts['passed']} passed, {declared} skipped for declared capabilities")
        return "not certified: " + ", ".join(parts)

    def report(self) -> dict[str, Any]:
        """The JSON report: driver, distribution and version, capabilities, verdict, each test's outcome."""
        from layerstore import __version__

        from ._options import command_line_options

        counts = self._count()
        probe = self.probe_result
        return {
            "driver": self.driver_name,
            "distribution": probe.distribution if probe else None,
            "version": probe.version if probe else None,
            "layerstore_version": __version__,
            "options": command_line_options(self.config),
            "capabilities": probe.capabilities if probe else None,
            "certified": self.certified,
            "verdict": self.verdict,
            "not_opened": self.not_opened,
            "counts": {k: counts[k] for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")},
            "skipped_for_declared_capabilities": self._declared_skips(),
            "tests": [
                {"id": nodeid, "outcome": outcome, "reason": reason}
                for nodeid, (outcome, reason) in sorted(self.outcomes.items())
            ],
        }

    def _write_report(self) -> None:
        path = self.config.getoption("--layerstore-report", None)
        if path:
            write_report(path, self.report())


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Write a certification report as JSON (replacing the file in one step)."""
    from layerstore.kit import atomic_write

    atomic_write(Path(path), json.dumps(report, indent=2) + "\n", durable=False)


def not_opened_report(driver_name: str, options: Mapping[str, str], reason: str) -> dict[str, Any]:
    """The report of a driver that could not even be opened."""
    from layerstore import __version__

    return {
        "driver": driver_name,
        "distribution": None,
        "version": None,
        "layerstore_version": __version__,
        "options": dict(options),
        "capabilities": None,
        "certified": False,
        "verdict": f"not certified: {reason}",
        "not_opened": reason,
        "counts": dict.fromkeys(("passed", "failed", "error", "skipped", "xfailed", "xpassed"), 0),
        "skipped_for_declared_capabilities": 0,
        "tests": [],
    }
