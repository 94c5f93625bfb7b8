"""Fixtures of the conformance suite: which driver to test, where, and cleaning up after each test."""

from __future__ import annotations

import contextlib
import inspect
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from layerstore.capabilities import CreateOpts
from layerstore.drivers import Driver, DriverFactory, available_drivers, load_driver, open_driver
from layerstore.errors import (
    ConfigError,
    DriverNotFound,
    DriverNotSupported,
    InvalidDriver,
    LayerNotFound,
    LayerStoreError,
)
from layerstore.fstree import remove_tree
from layerstore.idtools import IDMappings
from layerstore.testing import unavailable

from .._options import command_line_options
from ..requirements import Requirements


@attrs.frozen
class DriverSpec:
    """How to open the driver under test: its name, factory options, and factory (None: by entry point)."""

    name: str
    options: Mapping[str, str]
    factory: DriverFactory | None


_OPEN_FAILURES: set[tuple[str, tuple[tuple[str, str], ...], int]] = set()
"""Drivers (name, options, factory) that failed to open in this session: the first test says why."""


class MakeDriver:
    """Opens drivers under test on fresh homes and tears every one of them down afterwards.

    Calling it returns a new `Driver` (``make_driver(id_maps=IDMappings(...))``);
    every layer created through that facade is removed at the end of the
    test (children first), then ``cleanup`` runs and the home is deleted.
    """

    def __init__(self, spec: DriverSpec, root: Path) -> None:
        self.spec = spec
        self.root = root
        self._opened: list[tuple[Driver, Path, list[str]]] = []

    def __call__(
        self, id_maps: IDMappings | None = None, options: Mapping[str, str] | None = None, home: Path | None = None
    ) -> Driver:
        """Open the driver under test on a new home below the root (or on `home`, to reopen a store)."""
        spec = self.spec
        fresh = home is None
        if home is None:
            home = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=self.root))
        opts = dict(spec.options) if options is None else dict(options)
        try:
            if spec.factory is None:
                driver = load_driver(spec.name, home, opts, id_maps)
            else:
                driver = open_driver(spec.name, spec.factory, home, opts, id_maps)
        except DriverNotSupported as exc:
            if fresh:
                shutil.rmtree(home, ignore_errors=True)
            unavailable(spec.name, str(exc))
        except (DriverNotFound, ConfigError, InvalidDriver) as exc:
            if fresh:
                shutil.rmtree(home, ignore_errors=True)
            # Fail once with the reason; every later test of the session skips
            # pointing at that failure instead of repeating it.
            key = (spec.name, tuple(sorted(opts.items())), id(spec.factory))
            if key in _OPEN_FAILURES:
                pytest.skip(f"needs backend: driver {spec.name!r} cannot be opened (see the first failure)")
            _OPEN_FAILURES.add(key)
            pytest.fail(f"cannot open driver {spec.name!r}: {exc}", pytrace=False)
        created: list[str] = []
        original_create = driver.create

        def create(id: str, parent: str | None = None, opts: CreateOpts | None = None) -> None:
            if id not in created:
                created.append(id)
            original_create(id, parent, opts)

        # Record every layer the test creates so teardown can remove it, children first.
        setattr(driver, "create", create)  # noqa: B010 - instance attribute shadows the method
        self._opened.append((driver, home, created))
        return driver

    def teardown(self) -> None:
        """Remove every layer created (newest first), clean each driver up, delete the homes."""
        errors: list[BaseException] = []
        for driver, home, created in reversed(self._opened):
            for layer in reversed(created):
                try:
                    if driver.exists(layer):
                        driver.remove(layer, force=True)
                except (LayerStoreError, OSError) as exc:
                    errors.append(exc)
            try:
                driver.cleanup()
            except (LayerStoreError, OSError) as exc:
                errors.append(exc)
            try:
                if home.exists():
                    remove_tree(home)  # any depth (the deep-tree tests leave 5,000 levels if a driver fails them)
            except OSError as exc:
                errors.append(exc)
        self._opened.clear()
        if errors:
            raise errors[0]


def _class_attribute(cls: type, name: str) -> Any:
    # getattr_static: a plain function stored as driver_factory must not become a bound method.
    value = inspect.getattr_static(cls, name, None)
    if isinstance(value, staticmethod | classmethod):
        return getattr(cls, name)
    return value


class ConformanceBase:
    """Fixtures shared by every topic of the suite; `DriverConformance` mixes the topics in.

    Class attributes a subclass sets:

    - ``driver_name``: the driver's name (its entry point).  When None, the
      ``--layerstore-driver`` command-line option decides, together with
      ``--layerstore-option`` values.
    - ``driver_options``: options passed to the driver's factory.
    - ``driver_factory``: a factory ``(home, options, id_maps) -> plugin``
      used instead of the installed entry point.
    - ``requirements``: a `Requirements` subclass saying what the backend
      supports (which tests skip, and why).

    Fixtures a subclass may override: ``layerstore_root`` (a directory on the
    backend; each test gets a fresh home below it).
    """

    driver_name: ClassVar[str | None] = None
    driver_options: ClassVar[Mapping[str, str]] = {}
    driver_factory: ClassVar[DriverFactory | None] = None
    requirements: ClassVar[type[Requirements]] = Requirements
    """What the driver meets: subclass `Requirements` to answer for your backend, and set it here."""

    @pytest.fixture
    def layerstore_root(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The directory under which driver homes are made: ``--layerstore-root`` or a temporary directory."""
        option = request.config.getoption("--layerstore-root", None)
        if option:
            root = Path(option)
            root.mkdir(parents=True, exist_ok=True)
            return root
        return tmp_path_factory.mktemp("layerstore-root")

    @pytest.fixture
    def layerstore_driver_spec(self, request: pytest.FixtureRequest) -> DriverSpec:
        """Which driver this test class runs against (class attributes, else the command line)."""
        cls = type(self)
        factory = _class_attribute(cls, "driver_factory")
        name = _class_attribute(cls, "driver_name")
        options = dict(_class_attribute(cls, "driver_options") or {})
        if name is None:
            name = request.config.getoption("--layerstore-driver", None)
            if name is None and factory is not None:
                name = getattr(factory, "__name__", "driver")
            if name is None:
                installed = ", ".join(available_drivers()) or "none; install one, e.g. `pip install layerstore-vfs`"
                pytest.skip(
                    "no driver selected: run `pytest --pyargs layerstore.conformance --layerstore-driver NAME` "
                    f"or `layerstore conformance NAME` (installed drivers: {installed})"
                )
            options.update(command_line_options(request.config))
        return DriverSpec(name=name, options=options, factory=factory)

    @pytest.fixture
    def make_driver(self, layerstore_driver_spec: DriverSpec, layerstore_root: Path) -> Iterator[MakeDriver]:
        """A callable that opens the driver under test on a fresh home (optionally with ID maps)."""
        maker = MakeDriver(layerstore_driver_spec, layerstore_root)
        try:
            yield maker
        finally:
            maker.teardown()

    @pytest.fixture
    def driver(self, make_driver: MakeDriver) -> Driver:
        """The driver under test, opened on a fresh home; its layers are removed after the test."""
        return make_driver()

    @pytest.fixture
    def layerstore_requirements(self, driver: Driver) -> Requirements:
        """The test class's `requirements` answered for the driver under test (``.require("root")`` in a test)."""
        return type(self).requirements(driver)


def expect_missing(call: Callable[[], object], what: str) -> None:
    """Assert that `call` raises `LayerNotFound` (with a message) for the missing layer `what`."""
    with pytest.raises(LayerNotFound) as info:
        call()
    assert str(info.value), f"LayerNotFound for {what} has an empty message"


@contextlib.contextmanager
def held(driver: Driver, layer: str) -> Iterator[str]:
    """``get`` on entry, ``put`` on exit (like `Driver.mounted`, spelt out for readers of the suite)."""
    path = driver.get(layer)
    try:
        yield path
    finally:
        driver.put(layer)
