"""The image store: images (metadata + one layer each) on top of a storage driver.

This is the Docker engine's image ``graph`` (2015) in Python, one idea a module:
`files` (the on-disk layout, atomic writes, locks), `staging` (sweeping what
killed processes left), `transaction` (atomic register and delete), `reader`
(resolving names, loading and walking images), `retain` (sessions holding
layers), `maintenance` (``check``, ``gc``) and `store` (`Graph`, which ties
them to one driver).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DigestNotSet
from ..lazyimport import lazy_attributes
from .files import GRAPH_DIR
from .store import Graph

if TYPE_CHECKING:
    from .maintenance import CheckResult, GCReport

__all__ = ["GRAPH_DIR", "CheckResult", "DigestNotSet", "GCReport", "Graph"]


# check and gc (and the reassembly they use) are imported by the commands that need them only.
__getattr__ = lazy_attributes(__name__, {"CheckResult": ".maintenance", "GCReport": ".maintenance"}, globals())
