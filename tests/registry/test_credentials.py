"""The credential files of Podman and Docker: which is read, how entries match, what login writes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from layerstore.errors import ConfigError
from layerstore.registry.credentials import (
    Credentials,
    auth_files,
    find_credentials,
    remove_credentials,
    store_credentials,
)


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def test_order_podman_then_docker(home: Path) -> None:
    podman = home / "run" / "containers" / "auth.json"
    docker = home / "home" / ".docker" / "config.json"
    assert auth_files() == [podman, docker]
    docker.parent.mkdir(parents=True)
    docker.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": _auth("hub", "h"),
                                            "quay.io": _auth("dq", "d")}, "credsStore": "desktop"}))
    podman.parent.mkdir(parents=True)
    podman.write_text(json.dumps({"auths": {"quay.io": _auth("pq", "p:with:colons")}}))
    assert find_credentials("docker.io") == Credentials("hub", "h")
    assert find_credentials("quay.io") == Credentials("pq", "p:with:colons")
    assert find_credentials("ghcr.io") is None
    assert "secret-pw" not in repr(Credentials("u", "secret-pw"))


def test_registry_auth_file_is_the_only_one(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = home / "mine.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(explicit))
    assert auth_files() == [explicit]
    assert find_credentials("quay.io") is None
    path = store_credentials("localhost:5000", Credentials("u", "secret"))
    assert path == explicit
    assert explicit.stat().st_mode & 0o777 == 0o600
    assert find_credentials("localhost:5000") == Credentials("u", "secret")


def test_login_keeps_other_entries_and_logout_removes(home: Path) -> None:
    podman = home / "run" / "containers" / "auth.json"
    podman.parent.mkdir(parents=True)
    podman.write_text(json.dumps({"auths": {"quay.io": _auth("a", "b")}, "other": 1}))
    store_credentials("localhost:5000", Credentials("u", "p"))
    data = json.loads(podman.read_text())
    assert data["other"] == 1 and set(data["auths"]) == {"quay.io", "localhost:5000"}
    assert remove_credentials("localhost:5000") == [podman]
    assert find_credentials("localhost:5000") is None
    assert find_credentials("quay.io") == Credentials("a", "b")


def test_broken_file_is_a_clear_error(home: Path) -> None:
    podman = home / "run" / "containers" / "auth.json"
    podman.parent.mkdir(parents=True)
    podman.write_text("{not json")
    with pytest.raises(ConfigError, match=r"auth\.json is not valid JSON"):
        find_credentials("quay.io")
    podman.write_text(json.dumps({"auths": {"quay.io": {"auth": "!!!"}}}))
    with pytest.raises(ConfigError, match="not base64"):
        find_credentials("quay.io")
