"""Former private name of `layerstore.archive.tarheader` (drivers import the public one); re-exported."""

from __future__ import annotations

from . import tarheader
from .tarheader import *  # noqa: F403

__all__ = tarheader.__all__
