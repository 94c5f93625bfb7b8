"""Fixtures of the image tests: a loop-mounted ext4 workspace, the umoci/skopeo-built test image, stores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from images_helpers import NAME, TAG, Podman, build_umoci_layout, run, tool

from layerstore import load_driver
from layerstore.errors import DriverNotFound, DriverNotSupported
from layerstore.graph import Graph
from layerstore.images import ImageStore
from layerstore.testing import unavailable
from layerstore.testing.loop import loop_devices_under, loop_filesystem_or_unavailable, mounts_under


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted ext4 for the session (the root filesystem is slow at creating many files)."""
    workdir = tmp_path_factory.mktemp("images-loop")
    with loop_filesystem_or_unavailable("vfs", workdir, "ext4", 1024) as mnt:
        yield mnt
    leftovers = mounts_under(workdir) + loop_devices_under(workdir)
    if leftovers:
        pytest.fail(f"the image tests' filesystem was not torn down: {leftovers}")


@pytest.fixture(scope="session")
def images(workspace: Path) -> dict[str, Path]:
    """The test image in every input form, made by umoci and skopeo only.

    ``umoci``: umoci's OCI layout (tag v1, gzip layers);
    ``skopeo-oci``: skopeo's copy as an OCI layout directory; ``skopeo-docker``: skopeo's docker-archive tar.
    """
    base = workspace / "inputs"
    base.mkdir()
    layout = build_umoci_layout(base)
    skopeo = tool("skopeo")
    run(skopeo, "copy", f"oci:{layout}:{TAG}", f"oci:{base / 'skopeo-oci'}:{TAG}")
    run(skopeo, "copy", f"oci:{layout}:{TAG}", f"docker-archive:{base / 'skopeo-docker.tar'}:{NAME}")
    return {"umoci": layout, "skopeo-oci": base / "skopeo-oci", "skopeo-docker": base / "skopeo-docker.tar"}


@pytest.fixture
def scratch(workspace: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on the workspace for one test, removed afterwards."""
    path = workspace / "t" / request.node.name.replace("/", "_")[:80]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store(scratch: Path) -> Iterator[ImageStore]:
    """An image store on the vfs driver in the scratch directory."""
    root = scratch / "store"
    try:
        driver = load_driver("vfs", root / "vfs")
    except (DriverNotFound, DriverNotSupported) as exc:
        unavailable("vfs", str(exc))
    yield ImageStore(Graph(root, driver))
    driver.cleanup()


@pytest.fixture
def podman(scratch: Path) -> Iterator[Podman]:
    """podman on its vfs driver in a private root under the scratch directory."""
    tool("podman")
    client = Podman(scratch / "podman")
    yield client
    client.remove_storage()


@pytest.fixture
def layerstore_cli(scratch: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the real ``layerstore`` command on a vfs store in the scratch directory (never raising)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
    env.update(LAYERSTORE_ROOT=str(scratch / "store"), LAYERSTORE_DRIVER="vfs",
               XDG_CONFIG_HOME=str(scratch / "xdg-config"), XDG_DATA_HOME=str(scratch / "xdg-data"))
    executable = str(Path(sys.executable).parent / "layerstore")

    def _run(*args: str | os.PathLike[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([executable, *map(str, args)], input=input, capture_output=True, env=env,
                              check=False, stdin=None if input is not None else subprocess.DEVNULL)

    return _run
