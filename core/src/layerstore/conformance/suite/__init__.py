"""The conformance suite proper: `DriverConformance`, assembled from one mixin per topic.

Imported lazily through `layerstore.conformance.DriverConformance`; the
pytest plugin registers this package for assertion rewriting.
"""

from __future__ import annotations

from ._badinput import BadInputTests
from ._base import ConformanceBase, DriverSpec, MakeDriver
from ._chains import ChainTests
from ._copies import CopyTests
from ._crash import CrashTests
from ._deeptrees import DeepTreeTests
from ._difffiles import DiffFilesTests
from ._diffs import DiffTests
from ._layers import LayerTests
from ._optional import OptionalTests
from ._references import ReferenceTests
from ._removal import RemovalTests
from ._tarsemantics import TarSemanticsTests
from ._whiteouts import WhiteoutTests
from ._xattrs import XattrTests

__all__ = ["DriverConformance", "DriverSpec", "MakeDriver"]


class DriverConformance(
    LayerTests,
    CopyTests,
    ChainTests,
    DeepTreeTests,
    DiffTests,
    DiffFilesTests,
    WhiteoutTests,
    TarSemanticsTests,
    ReferenceTests,
    RemovalTests,
    BadInputTests,
    OptionalTests,
    XattrTests,
    CrashTests,
    ConformanceBase,
):
    """The conformance suite of a storage driver; subclass it as ``Test...`` to run it.

    Class attributes (see `ConformanceBase`): ``driver_name`` (None: the
    ``--layerstore-driver`` option decides), ``driver_options`` (factory
    options), ``driver_factory`` (a factory to use instead of the installed
    entry point).  Fixtures: ``layerstore_root`` (override it to put driver
    homes on your backend), ``layerstore_driver_spec``, ``make_driver`` (opens
    more instances, e.g. with ID maps), ``driver`` (a fresh driver per test).

    Mark a known bug of your driver as a strict xfail in your subclass::

        @pytest.mark.xfail(strict=True, reason="issue #12")
        def test_depth_limit(self, driver):
            super().test_depth_limit(driver)
    """
