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

Tests that need a capability skip, saying which, when the driver does not
declare it; everything else must pass for every driver.  A few tests need
root (device nodes, foreign owners, ``trusted.*`` xattrs): without it they
skip, saying so, except under ``CI=true`` or ``LAYERSTORE_REQUIRE_DRIVERS``,
where they fail (no silent skips in CI).  `DriverConformance`
is imported lazily so that the pytest plugin stays cheap at start-up.
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
) -> int:
    """Run the conformance suite against the installed driver `driver_name` in this process.

    `root` is a directory on the driver's backend under which every test gets
    a fresh driver home (default: a temporary directory); `options` are
    passed to the driver's factory; `pytest_args` are appended to pytest's
    command line (e.g. ``["-x", "-k", "diff"]``).  Returns pytest's exit code
    (0 when every test passed or was skipped for a missing capability).
    """
    import pytest

    args = ["--pyargs", "layerstore.conformance", "--layerstore-driver", driver_name]
    # The caller (the CLI) has imported layerstore already, so pytest cannot
    # rewrite its asserts; the suite's assertions carry their own messages.
    args += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if root is not None:
        args += ["--layerstore-root", os.fspath(root)]
    for key, value in (options or {}).items():
        args += ["--layerstore-option", f"{key}={value}"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args += ["-p", "layerstore.conformance.plugin"]
    args += list(pytest_args)
    return int(pytest.main(args))


def __getattr__(name: str) -> Any:
    if name == "DriverConformance":
        from .suite import DriverConformance

        return DriverConformance
    raise AttributeError(f"module 'layerstore.conformance' has no attribute {name!r}")
