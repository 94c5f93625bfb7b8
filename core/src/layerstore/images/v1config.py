"""Image configs for content that has only Docker's v1 image JSON: an old docker-archive, a chain made by ``import``.

Such content has no config of its own, so one is built: architecture, OS,
creation time and run config of the newest v1 image, the chain's diff
digests from the bottom up, and a history entry per layer.  It is written as
compact JSON with sorted keys, so the same chain always gives the same config
digest, which is the image ID.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["config_from_v1"]


def config_from_v1(*, architecture: str | None, os: str | None, created: str, run_config: Mapping[str, Any] | None,
                   diff_ids: Sequence[str], history: Sequence[Mapping[str, Any]]) -> bytes:
    """The config bytes of a v1 chain whose newest image has these fields (``amd64`` and ``linux`` when empty)."""
    config = {
        "architecture": architecture or "amd64",
        "os": os or "linux",
        "created": created,
        "config": run_config or {},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": list(history),
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
