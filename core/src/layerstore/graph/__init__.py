"""The image store: images (metadata + one layer each) on top of a storage driver.

This is the Docker engine's image ``graph`` (2015) in Python, in four modules:
`files` (the on-disk layout, atomic writes, locks), `staging` (sweeping what
killed processes left), `transaction` (atomic register and delete), `store`
(`Graph`: resolving, reading, retaining) and `maintenance` (`check`, `gc`).
"""

from __future__ import annotations

from ..errors import DigestNotSet
from .files import GRAPH_DIR
from .maintenance import CheckResult, GCReport
from .store import Graph

__all__ = ["GRAPH_DIR", "CheckResult", "DigestNotSet", "GCReport", "Graph"]
