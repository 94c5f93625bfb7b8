"""Names as Docker completes them, and Docker Hub's names mapped to its registry endpoint."""

from __future__ import annotations

import pytest

from layerstore.errors import InvalidReference
from layerstore.images.reference import parse_reference, registry_endpoint
from layerstore.registry import RegistryClient, RegistryOptions


@pytest.mark.parametrize(("name", "full"), [
    ("alpine", "docker.io/library/alpine:latest"),
    ("team/app:1.2", "docker.io/team/app:1.2"),
    ("docker.io/alpine:3.20", "docker.io/library/alpine:3.20"),
    ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.example.com/a/b/c@sha256:" + "a" * 64, "registry.example.com/a/b/c@sha256:" + "a" * 64),
])
def test_names_are_completed(name: str, full: str) -> None:
    assert str(parse_reference(name)) == full


def test_docker_hub_endpoint() -> None:
    assert registry_endpoint("docker.io") == "registry-1.docker.io"
    assert registry_endpoint("localhost:5000") == "localhost:5000"
    with RegistryClient(parse_reference("alpine").registry, RegistryOptions()) as client:  # no connection yet
        assert client.host == "registry-1.docker.io"


@pytest.mark.parametrize("name", ["UPPER/case", "a//b", "app:" + "x" * 129, "app@sha256:short", ""])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(name)
