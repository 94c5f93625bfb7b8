"""The pytest plugin of the conformance suite (entry point ``pytest11: layerstore``).

It only adds the ``--layerstore-*`` options and the ``layerstore_requires``
marker; it defines no fixtures and imports nothing heavy at start-up.  The
suite itself (`layerstore.conformance.DriverConformance`) is imported only by
the test modules that use it.

``@pytest.mark.layerstore_requires("native-diff", ...)`` on a test that uses a
`layerstore.Driver` fixture skips the test, naming the capability and the
driver, when the driver's `Capabilities` lacks one of them.  A capability
name that does not exist is an error of the test, not a skip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from layerstore.drivers import Driver

MARKER = "layerstore_requires"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--layerstore-driver``, ``--layerstore-root`` and ``--layerstore-option``."""
    group = parser.getgroup("layerstore", "layerstore driver conformance")
    group.addoption(
        "--layerstore-driver",
        metavar="NAME",
        default=None,
        help="installed storage driver to run the conformance suite against (see `layerstore drivers`)",
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


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``layerstore_requires`` marker; have the suite's asserts rewritten when it is imported."""
    pytest.register_assert_rewrite("layerstore.conformance.suite")
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*capabilities): skip unless the driver under test declares every named capability "
        "(e.g. 'native-diff', 'quota', 'idmap', 'read-only-layers', 'reflink')",
    )


def required_capabilities(item: pytest.Item) -> list[str]:
    """The capability names `item` requires through ``layerstore_requires`` markers (validated).

    Raises `ValueError` for a misspelt name or a marker without names.
    """
    from layerstore.capabilities import capability_attribute

    names: list[str] = []
    for marker in item.iter_markers(MARKER):
        if not marker.args:
            raise ValueError(f"@pytest.mark.{MARKER}() needs at least one capability name")
        for name in marker.args:
            if not isinstance(name, str):
                raise ValueError(f"@pytest.mark.{MARKER} takes capability names as strings, got {name!r}")
            capability_attribute(name)
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
    """Fail a test with a misspelt ``layerstore_requires``; skip it when its driver lacks a capability.

    Capabilities are known only once the driver is open, so this runs last,
    after the test's fixtures are set up (their finalizers still run).
    """
    if item.get_closest_marker(MARKER) is None:
        return
    try:
        names = required_capabilities(item)
    except ValueError as exc:
        pytest.fail(f"{item.nodeid}: {exc}", pytrace=False)
    driver = _driver_of(item)
    if driver is None:
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.{MARKER} needs a test that uses a layerstore.Driver fixture "
            "(such as `driver` of DriverConformance)",
            pytrace=False,
        )
    from layerstore.capabilities import capability_attribute

    for name in names:
        if not getattr(driver.capabilities, capability_attribute(name)):
            pytest.skip(f"driver {driver.name!r} does not declare capability {name!r}")
