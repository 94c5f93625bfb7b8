"""What a conformance test needs of the driver under test, in one object (SQLAlchemy's ``requirements.py`` style).

Every test that cannot run everywhere says so with a marker naming
requirements::

    @pytest.mark.layerstore_requires("quota")
    def test_quota(self, driver): ...

    @pytest.mark.layerstore_requires("root", "idmap")
    def test_ownership_under_id_maps(self, driver, make_driver): ...

Before such a test runs (its fixtures are set up, so the driver is open) the
suite builds the test class's `Requirements` object for that driver and
asks each named requirement, a property returning a `Requirement`.  A
requirement that is not met skips the test with the reason
``requires NAME: why`` (a capability the driver does not declare) or
``needs NAME: why`` (the machine lacks something, e.g. root; such a skip
fails where CI requires the driver); the certification summary groups
skips by these reasons.  A misspelt name is an error of the test, never a skip.

A third party subclasses `Requirements` to say what its backend supports,
and points its test class at it::

    class MyRequirements(Requirements):
        @property
        def quota(self) -> Requirement:
            return Requirement.unless(backend_has_quota(), "quota", "the pool has no quota support")

    class TestMyDriver(DriverConformance):
        driver_name = "mydriver"
        requirements = MyRequirements

New properties in a subclass are new requirement names its own tests may use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import attrs

from layerstore.capabilities import CAPABILITY_NAMES, capability_attribute

if TYPE_CHECKING:
    from layerstore.drivers import Driver

__all__ = ["ENVIRONMENT_PREFIX", "SKIP_PREFIX", "Requirement", "Requirements", "UnknownRequirement"]

SKIP_PREFIX = "requires "
"""Skip reasons of requirements the driver answers for itself (capabilities) start with this;
the certification counts these skips as "skipped for declared capabilities"."""
ENVIRONMENT_PREFIX = "needs "
"""Skip reasons of strict requirements (what the machine lacks, e.g. root) start with this:
such a skip leaves a driver not certified."""


class UnknownRequirement(ValueError):
    """A marker names a requirement the `Requirements` class does not have."""


@attrs.frozen
class Requirement:
    """The answer of one requirement for the driver under test."""

    name: str
    """The requirement's marker name (``native-diff``, ``root``)."""
    met: bool
    """Whether the test may run."""
    reason: str = ""
    """Why it is not met (the skip reason after ``requires NAME:``)."""
    strict: bool = False
    """When not met: fail instead of skipping where CI requires the driver (``CI=true``,
    ``LAYERSTORE_REQUIRE_DRIVERS``): the environment, not the driver, is missing something."""

    @classmethod
    def unless(cls, met: bool, name: str, reason: str, *, strict: bool = False) -> Requirement:
        """Met when `met`; otherwise not met because of `reason`."""
        return cls(name, bool(met), "" if met else reason, strict)

    @property
    def skip_reason(self) -> str:
        """``requires NAME: reason``, or ``needs NAME: reason`` for a strict requirement."""
        return f"{ENVIRONMENT_PREFIX if self.strict else SKIP_PREFIX}{self.name}: {self.reason}"


class Requirements:
    """The requirements the suite knows, answered for one opened driver.

    Each public property is a requirement a test may name in
    ``@pytest.mark.layerstore_requires(...)`` (dashes for underscores).
    Subclass it to add requirements or to answer differently for your
    backend; set ``requirements = YourClass`` on your test class.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    # -- capabilities the driver declares ------------------------------------

    def _capability(self, name: str) -> Requirement:
        declared = bool(getattr(self.driver.capabilities, capability_attribute(name)))
        return Requirement.unless(declared, name, f"driver {self.driver.name!r} does not declare capability {name!r}")

    @property
    def native_diff(self) -> Requirement:
        """The driver computes diff/changes/diff_size itself (capability ``native-diff``)."""
        return self._capability("native-diff")

    @property
    def quota(self) -> Requirement:
        """``create`` honours the ``size`` storage option (capability ``quota``)."""
        return self._capability("quota")

    @property
    def idmap(self) -> Requirement:
        """Ownership is translated through ID maps (capability ``idmap``)."""
        return self._capability("idmap")

    @property
    def read_only_layers(self) -> Requirement:
        """``CreateOpts(read_only=True)`` layers refuse writes (capability ``read-only-layers``)."""
        return self._capability("read-only-layers")

    @property
    def reflink(self) -> Requirement:
        """Children share file data with their parent (capability ``reflink``)."""
        return self._capability("reflink")

    @property
    def max_depth(self) -> Requirement:
        """The driver declares a maximum chain depth (``Capabilities.max_depth``)."""
        return Requirement.unless(
            self.driver.max_depth is not None, "max-depth", f"driver {self.driver.name!r} declares no maximum depth"
        )

    # -- the environment -------------------------------------------------------

    @property
    def root(self) -> Requirement:
        """The suite runs as root: it may create device nodes, chown to any owner and write ``trusted.*`` xattrs.

        Strict: where CI requires the driver, a run without root fails.
        """
        return Requirement.unless(
            os.geteuid() == 0,
            "root",
            "the suite is not running as root (device nodes, foreign owners, trusted.* xattrs)",
            strict=True,
        )

    @property
    def backend(self) -> Requirement:
        """The driver's backend is reachable for this test (a pool, a service, a device).

        Met by default: the driver opened, so its backend answered.  Override
        it for a backend that can be present but unusable (a remote service
        down); it is strict, so such a skip fails where CI requires the driver.
        """
        return Requirement("backend", True, strict=True)

    @property
    def crash_tests(self) -> Requirement:
        """The suite may kill a child process that works on the driver (SIGKILL) and reopen the store.

        Met everywhere by default; a subclass may refuse it for a backend a
        killed client damages beyond the driver's control.
        """
        return Requirement("crash-tests", True)

    # -- asking ----------------------------------------------------------------

    @classmethod
    def names(cls) -> list[str]:
        """Every requirement name this class answers (marker spelling, with dashes)."""
        return sorted(
            name.replace("_", "-")
            for name in dir(cls)
            if not name.startswith("_") and isinstance(getattr(cls, name, None), property)
        )

    def get(self, name: str) -> Requirement:
        """The requirement `name` (``native-diff`` or ``native_diff``); `UnknownRequirement` if misspelt."""
        attribute = name.replace("-", "_")
        if attribute.startswith("_") or not isinstance(getattr(type(self), attribute, None), property):
            if name.replace("_", "-") in CAPABILITY_NAMES:
                # A capability added to Capabilities later is a requirement at once.
                return self._capability(name.replace("_", "-"))
            known = ", ".join(sorted({*self.names(), *CAPABILITY_NAMES}))
            raise UnknownRequirement(f"unknown requirement {name!r}; known requirements: {known}")
        result = getattr(self, attribute)
        if not isinstance(result, Requirement):
            raise TypeError(f"requirement {name!r} of {type(self).__name__} returned {result!r}, not a Requirement")
        return result

    def unmet(self, *names: str) -> Requirement | None:
        """The first of `names` that is not met, or None when the test may run."""
        for name in names:
            requirement = self.get(name)
            if not requirement.met:
                return requirement
        return None

    def require(self, *names: str) -> None:
        """Skip the running test unless all of `names` are met (a strict one fails where CI requires the driver)."""
        missing = self.unmet(*names)
        if missing is None:
            return
        import pytest

        from layerstore.testing import driver_required

        if missing.strict and driver_required(self.driver.name):
            pytest.fail(
                f"driver {self.driver.name} is required here (CI or LAYERSTORE_REQUIRE_DRIVERS) "
                f"but the test {missing.skip_reason}",
                pytrace=False,
            )
        try:
            # Report the skip at the test, like a skip marker, not at this line.
            skipped = pytest.skip.Exception(missing.skip_reason, _use_item_location=True)
        except TypeError:  # a pytest without that keyword
            skipped = pytest.skip.Exception(missing.skip_reason)
        raise skipped
