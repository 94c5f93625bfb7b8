"""A child process that runs one driver operation and may be killed in the middle (crash tests).

Run as ``python -m layerstore.conformance._worker``.  The first line on
stdin is a JSON spec ``{"name", "factory", "home", "options", "op", "layer",
"parent", "tar"}`` (`factory` is ``"module:qualname"`` or null for the
installed entry point; `op` is ``create``, ``apply_diff`` or ``remove``).
The process opens the driver, writes ``ready`` when it is about to call the
operation, and ``done`` when the operation returned.
"""

from __future__ import annotations

import json
import sys

from ._holder import open_from_spec


def main() -> None:
    """Run the operation of the spec on stdin (see the module docstring)."""
    spec = json.loads(sys.stdin.readline())
    driver = open_from_spec(spec)
    op, layer, parent = spec["op"], spec["layer"], spec["parent"]
    print("ready", flush=True)
    if op == "create":
        driver.create(layer, parent)
    elif op == "apply_diff":
        with open(spec["tar"], "rb") as stream:
            driver.apply_diff(layer, parent, stream)
    elif op == "remove":
        driver.remove(layer)
    else:
        raise ValueError(f"unknown operation {op!r}")
    print("done", flush=True)


if __name__ == "__main__":
    main()
