"""Images for the fault tests, made by umoci and skopeo (never by layerstore), and skopeo's view of a save."""

from __future__ import annotations

import json
from pathlib import Path

from layerstore.process import run_command
from layerstore.testing.registry import require_tools

from .test_references import layer_tar


def umoci_layout(work: Path, name: str, layers: list[dict[str, bytes]]) -> Path:
    """An OCI layout ``work/layout-<name>`` with image ``v1`` whose layers hold `layers` ({path: content}), in order."""
    require_tools("umoci", "skopeo")
    layout = work / f"layout-{name}"
    run_command(["umoci", "init", "--layout", str(layout)])
    run_command(["umoci", "new", "--image", f"{layout}:v1"])
    for n, files in enumerate(layers):
        tar = work / f"{name}-{n}.tar"
        tar.write_bytes(layer_tar(files))
        run_command(["umoci", "raw", "add-layer", "--image", f"{layout}:v1", str(tar)])
    return layout


def docker_archive(layout: Path, archive: Path, reference: str) -> Path:
    """`archive`: skopeo's docker-archive of `layout`'s image ``v1``, named `reference`."""
    run_command(["skopeo", "--insecure-policy", "copy", f"oci:{layout}:v1", f"docker-archive:{archive}:{reference}"])
    return archive


def skopeo_layers(archive: Path) -> list[str]:
    """The layer digests of a docker-archive, as skopeo reads them."""
    raw = run_command(["skopeo", "inspect", "--raw", f"docker-archive:{archive}"]).stdout
    return [str(layer["digest"]) for layer in json.loads(raw)["layers"]]
