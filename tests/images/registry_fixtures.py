"""Fixtures of the registry tests: Debian's docker-registry (plain, and TLS with basic auth), images pushed by skopeo.

Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from images_helpers import TAG

from layerstore.images import ImageStore
from layerstore.registry import Credentials, RegistryOptions
from layerstore.testing.registry import LocalRegistry, require_tools, skopeo

REPO = "test/app"


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A docker-registry on plain HTTP without authentication."""
    require_tools("docker-registry", "skopeo")
    with LocalRegistry(tmp_path / "plain-registry") as registry:
        yield registry


@pytest.fixture
def secure_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A docker-registry behind TLS (a CA made here) with htpasswd basic auth."""
    require_tools("docker-registry", "skopeo", "openssl", "htpasswd")
    with LocalRegistry(tmp_path / "secure-registry", secure=True) as registry:
        yield registry


def push_with_skopeo(layout: Path, registry: LocalRegistry, repository: str = REPO, tag: str = TAG) -> str:
    """Copy `layout`:TAG to the registry with skopeo; returns the pushed reference."""
    reference = f"{registry.host}/{repository}:{tag}"
    skopeo("copy", *registry.skopeo_flags("dest"), f"oci:{layout}:{TAG}", f"docker://{reference}")
    return reference


@pytest.fixture
def pushed(plain_registry: LocalRegistry, images: dict[str, Path]) -> str:
    """The test image (built by umoci) pushed by skopeo to the plain registry; its reference."""
    return push_with_skopeo(images["umoci"], plain_registry)


def insecure(retries: int = 6) -> RegistryOptions:
    """Options for the plain registry."""
    return RegistryOptions(insecure=True, retries=retries, backoff=0.1)


def secure_options(registry: LocalRegistry, password: str | None = None) -> RegistryOptions:
    """Options for the TLS registry with its CA and credentials."""
    return RegistryOptions(ca_file=str(registry.ca_file), backoff=0.1,
                           credentials=Credentials(registry.username, password or registry.password))


def assert_empty(store: ImageStore) -> None:
    """Nothing of a failed pull is left: no image, no layer, no spool, no staging."""
    assert store.images() == []
    assert store.graph.ids() == []
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")] == []


@pytest.fixture
def cli(tmp_path: Path, scratch: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``layerstore`` command on a vfs store, with a credential file of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_", "REGISTRY_AUTH"))}
    env.update(LAYERSTORE_ROOT=str(scratch / "store"), LAYERSTORE_DRIVER="vfs", HOME=str(tmp_path / "home"),
               REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"))
    executable = str(Path(sys.executable).parent / "layerstore")

    def run(*args: str | os.PathLike[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([executable, *map(str, args)], input=input, capture_output=True, text=True, env=env,
                              check=False, stdin=None if input is not None else subprocess.DEVNULL)

    return run


def blob_file(registry: LocalRegistry, digest: str) -> Path:
    """Where the registry's filesystem storage keeps blob `digest`."""
    hexdigest = digest.partition(":")[2]
    return registry.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
