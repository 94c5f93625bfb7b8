"""The conformance suite against the driver named on the command line.

    pytest --pyargs layerstore.conformance --layerstore-driver NAME [--layerstore-root DIR] [--layerstore-option k=v]

Without ``--layerstore-driver`` every test skips and says how to choose one.
"""

from __future__ import annotations

from layerstore.conformance import DriverConformance


class TestDriver(DriverConformance):
    """Every conformance test, against ``--layerstore-driver`` with ``--layerstore-option`` values."""
