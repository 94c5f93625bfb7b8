"""The pytest plugin of the conformance suite (entry point ``pytest11: layerstore``).

It adds the ``--layerstore-*`` options and the ``layerstore_requires``
marker, and nothing else at start-up: no fixtures, no heavy imports.  The
suite itself (`layerstore.conformance.DriverConformance`) is imported only
by the test modules that use it.

``@pytest.mark.layerstore_requires("native-diff", "root", ...)`` on a test
that uses a `layerstore.Driver` fixture (and, implicitly, ``backend`` for
every test of a `DriverConformance` class) asks the test class's requirements
object (`layerstore.conformance.requirements.Requirements`, or the class
named by its ``requirements`` attribute) and skips the test with the reason
(``requires native-diff: driver 'vfs' does not declare capability
'native-diff'``) when one is not met.  A misspelt name is an error of the
test, not a skip.

When a driver is named on the command line (``--layerstore-driver``, which
`layerstore conformance` passes) the run is a certification: the driver is
opened once on a throwaway home before any test (if it cannot be opened the
run stops with that one reason and a non-zero exit), skip reasons are
always listed, the last line says ``certified: N passed, M skipped for
declared capabilities`` or ``not certified: ...``, and
``--layerstore-report FILE`` writes the outcome as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from layerstore.drivers import Driver

MARKER = "layerstore_requires"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--layerstore-driver``, ``--layerstore-root``, ``--layerstore-option`` and ``--layerstore-report``."""
    group = parser.getgroup("layerstore", "layerstore driver conformance")
    group.addoption(
        "--layerstore-driver",
        metavar="NAME",
        default=None,
        help="installed storage driver to certify with the conformance suite (see `layerstore drivers`)",
    )
    group.addoption(
        "--layerstore-root",
        metavar="DIR",
        default=None,
        help="directory on the driver's backend under which each test gets a fresh driver home "
        "(default: a temporary directory)",
    )
    group.addoption(
        "--layerstore-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="driver option passed to the driver's factory (repeatable)",
    )
    group.addoption(
        "--layerstore-report",
        metavar="FILE",
        default=None,
        help="write the certification report (driver, distribution, capabilities, each test's outcome) as JSON",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; have the suite's asserts rewritten; start a certification when a driver is named."""
    pytest.register_assert_rewrite("layerstore.conformance.suite")
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*requirements): skip, with the reason, unless the driver under test meets every named "
        "requirement (capabilities such as 'native-diff', 'quota', 'idmap', 'read-only-layers', 'reflink', "
        "'max-depth'; 'root'; see layerstore.conformance.requirements)",
    )
    name = config.getoption("--layerstore-driver", None)
    if name and not hasattr(config, "workerinput"):  # xdist workers: the controller certifies
        from .certification import Certification

        config.pluginmanager.register(Certification(config, name), "layerstore-certification")


def required_names(item: pytest.Item) -> list[str]:
    """The requirement names `item` lists in ``layerstore_requires`` markers; `ValueError` for a bad marker."""
    names: list[str] = []
    for marker in item.iter_markers(MARKER):
        if not marker.args:
            raise ValueError(f"@pytest.mark.{MARKER}() needs at least one requirement name")
        for name in marker.args:
            if not isinstance(name, str):
                raise ValueError(f"@pytest.mark.{MARKER} takes requirement names as strings, got {name!r}")
            names.append(name)
    return names


def _driver_of(item: pytest.Item) -> Driver | None:
    from layerstore.drivers import Driver

    funcargs = getattr(item, "funcargs", {})
    preferred = funcargs.get("driver")
    if isinstance(preferred, Driver):
        return preferred
    for value in funcargs.values():
        if isinstance(value, Driver):
            return value
    return None


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test with a misspelt requirement; skip it (with the reason) when one is not met.

    The driver is known only once the test's fixtures are set up, so this
    runs last (their finalizers still run).
    """
    cls = getattr(item, "cls", None)
    suite_test = getattr(cls, "requirements", None) is not None  # a DriverConformance test: needs its backend
    if item.get_closest_marker(MARKER) is None and not suite_test:
        return
    from .requirements import Requirements, UnknownRequirement

    try:
        names = required_names(item)
    except ValueError as exc:
        pytest.fail(f"{item.nodeid}: {exc}", pytrace=False)
    if suite_test:
        names = ["backend", *names]
    driver = _driver_of(item)
    if driver is None:
        if not item.get_closest_marker(MARKER):
            return  # a suite test without a driver (e.g. a pure helper test): nothing to ask
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.{MARKER} needs a test that uses a layerstore.Driver fixture "
            "(such as `driver` of DriverConformance)",
            pytrace=False,
        )
    requirements_class = getattr(cls, "requirements", None) or Requirements
    requirements = requirements_class(driver)
    try:
        requirements.unmet(*names)
    except UnknownRequirement as exc:
        pytest.fail(f"{item.nodeid}: {exc}", pytrace=False)
    requirements.require(*names)
