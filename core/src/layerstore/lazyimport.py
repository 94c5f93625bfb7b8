"""A package's names imported on first use: the package's ``__getattr__``, made from a table of their modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, homes: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` for `package` that imports each name of `homes` on first use.

    `homes` maps a name to the module defining it, relative to `package`
    (``".apply"``, ``"..fstree"``).  The value found is stored in `namespace`
    (the package's ``globals()``), so later uses cost nothing; any other name
    raises `AttributeError` as a module does.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        namespace[name] = value
        return value

    return __getattr__
