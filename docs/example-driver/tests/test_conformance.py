"""The layerstore conformance suite against the copydir driver.

Run ``pytest tests --layerstore-root DIR`` with DIR on the backend the
driver is meant for (the crash tests create tens of thousands of files).
"""

from __future__ import annotations

from layerstore.conformance import DriverConformance


class TestCopydirDriver(DriverConformance):
    """Every conformance test against the installed ``copydir`` driver."""

    driver_name = "copydir"
