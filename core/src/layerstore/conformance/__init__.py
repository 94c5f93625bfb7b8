"""The shared conformance suite of layerstore storage drivers.

Run it against an installed driver::

    layerstore conformance NAME [--root DIR] [--option k=v ...] [-- pytest args]
    pytest --pyargs layerstore.conformance --layerstore-driver NAME [--layerstore-root DIR]

or subclass `DriverConformance` in a driver's own tests::

    from layerstore.conformance import DriverConformance

    class TestMyDriver(DriverConformance):
        driver_name = "mydriver"
        driver_options = {"some": "option"}

        @pytest.fixture
        def layerstore_root(self, my_backend_mount):  # a directory on the backend
            return my_backend_mount

Tests name what they need with ``@pytest.mark.layerstore_requires(...)``
and the test class's requirements object
(`layerstore.conformance.requirements.Requirements`) decides: a capability
the driver does not declare skips the test, saying which; a few tests need
root (device nodes, foreign owners, ``trusted.*`` xattrs) and skip without
it, except under ``CI=true`` or ``LAYERSTORE_REQUIRE_DRIVERS``, where they
fail (no silent skips in CI).  Everything else must pass for every driver.

A run that names the driver (the two commands above) is a certification:
the driver is opened once first (a driver that cannot be opened stops the
run with the reason and a non-zero exit), skip reasons are listed, and the
last line says ``certified: N passed, M skipped for declared capabilities``
or ``not certified: ...``; ``--report FILE`` (``--layerstore-report``)
writes a JSON report.  `DriverConformance` is imported lazily so that the
pytest plugin stays cheap at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .suite import DriverConformance

__all__ = ["DriverConformance", "run_suite"]


def run_suite(
    driver_name: str,
    root: str | os.PathLike[str] | None = None,
    options: Mapping[str, str] | None = None,
    pytest_args: Iterable[str] = (),
    report: str | os.PathLike[str] | None = None,
) -> int:
    """Certify the installed driver `driver_name` with the conformance suite, in this process.

    The driver is opened once first, on a throwaway home: if that fails, the
    `layerstore.errors.LayerStoreError` saying why is raised and no test
    runs.  `root` is a directory on the driver's backend under which every
    test gets a fresh driver home (default: a temporary directory);
    `options` are passed to the driver's factory; `report` names a JSON
    report file to write; `pytest_args` are appended to pytest's command
    line (e.g. ``["-x", "-k", "diff"]``).  Returns pytest's exit code: 0
    only when the driver is certified (every test passed or was skipped
    for a capability the driver does not declare).
    """
    import pytest

    from layerstore.errors import LayerStoreError

    from .certification import not_opened_report, probe_driver, write_report

    try:
        probe_driver(driver_name, options or {}, root)
    except LayerStoreError as exc:
        if report is not None:
            write_report(report, not_opened_report(driver_name, options or {}, str(exc)))
        raise
    args = ["--pyargs", "layerstore.conformance", "--layerstore-driver", driver_name]
    # The caller (the CLI) has imported layerstore already, so pytest cannot
    # rewrite its asserts; the suite's assertions carry their own messages.
    args += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if root is not None:
        args += ["--layerstore-root", os.fspath(root)]
    for key, value in (options or {}).items():
        args += ["--layerstore-option", f"{key}={value}"]
    if report is not None:
        args += ["--layerstore-report", os.fspath(report)]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args += ["-p", "layerstore.conformance.plugin"]
    args += list(pytest_args)
    return int(pytest.main(args))


def __getattr__(name: str) -> Any:
    if name == "DriverConformance":
        from .suite import DriverConformance

        return DriverConformance
    raise AttributeError(f"module 'layerstore.conformance' has no attribute {name!r}")
