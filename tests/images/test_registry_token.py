"""Bearer token authentication against Debian's docker-registry in its ``auth: token`` mode.

The token server is the test's own (`token_issuer`: stdlib HTTPS and JWTs
signed by an RSA key made by ``openssl``); the registry checks every token's
signature against the signing certificate, its issuer, audience, expiry and
the repository actions it grants.  skopeo is the independent client that
pushes the test image first and reads the pushed copy back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from images_helpers import TAG, assert_json_schema, skopeo_inspect
from registry_fixtures import (
    REPO,
    TokenServer,
    assert_empty,
    cli,
    push_with_skopeo,
    secure_options,
    token_registry,
)

from layerstore.errors import AuthenticationFailed, RegistryError
from layerstore.images import ImageStore
from layerstore.registry import RegistryOptions
from layerstore.registry.transfer import pull, push
from layerstore.testing.registry import LocalRegistry, skopeo

__all__ = ["cli", "token_registry"]  # fixtures used by name

TokenRegistry = tuple[LocalRegistry, TokenServer]


def _scopes(requests: list[dict[str, Any]]) -> list[list[str]]:
    return [r["scopes"] for r in requests]


def test_pull_and_push_through_the_challenge(store: ImageStore, images: dict[str, Path],
                                             token_registry: TokenRegistry, scratch: Path) -> None:
    registry, server = token_registry
    reference = push_with_skopeo(images["umoci"], registry)
    mark, log_mark = len(server.requests()), len(registry.access_log())

    result = pull(store, reference, options=secure_options(registry))
    image = result.image
    assert result.layers_fetched == 2
    assert image.digest == skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    # One token for the repository, asked for after the one challenge, and used for every later request
    # (manifest, config, two layers downloaded in parallel).
    assert _scopes(server.requests()[mark:]) == [[f"repository:{REPO}:pull"]]
    assert [r["outcome"] for r in server.requests()[mark:]] == ["granted"]
    refused = [r for r in registry.access_log()[log_mark:] if r[2] == 401]
    assert len(refused) == 1

    # Push to another repository: a token for it, and one for the mounts from where the image came from.
    mark = len(server.requests())
    target = f"{registry.host}/team/copy:v1"
    first = push(store, image.id, target, options=secure_options(registry))
    assert (first.blobs_mounted, first.blobs_uploaded) == (3, 0)
    scopes = _scopes(server.requests()[mark:])
    assert ["repository:team/copy:pull,push"] in scopes
    assert ["repository:team/copy:pull,push", f"repository:{REPO}:pull"] in scopes
    assert len(scopes) == 2
    copy = scratch / "copy"
    skopeo("copy", *registry.skopeo_flags("src"), f"docker://{target}", f"oci:{copy}:x")
    assert skopeo_inspect(f"oci:{copy}:x", config=True) == image.digest

    second = push(store, image.id, target, options=secure_options(registry))
    assert (second.blobs_present, second.blobs_mounted, second.blobs_uploaded, second.bytes) == (3, 0, 0, 0)

    # A fresh image pushed to a new repository: uploads under a push token of that repository.
    other = pull(store, reference, options=secure_options(registry))
    fresh = push(store, other.image.id, f"{registry.host}/team/zstd:v1", options=secure_options(registry),
                 compress="zstd")
    assert fresh.blobs_uploaded == 2 and fresh.blobs_mounted == 1  # zstd layers are new; the config mounts


def test_wrong_password_and_no_credentials(store: ImageStore, images: dict[str, Path], token_registry: TokenRegistry,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, server = token_registry
    reference = push_with_skopeo(images["umoci"], registry)
    with pytest.raises(AuthenticationFailed, match="refused the user name or password") as info:
        pull(store, reference, options=secure_options(registry, password="wrong"))
    assert "\n" not in str(info.value) and "wrong" not in str(info.value)
    assert server.requests()[-1]["outcome"] == "refused"
    assert_empty(store)
    with pytest.raises(AuthenticationFailed, match="refused the user name or password"):
        _push_loaded(store, images, registry, "wrong")

    # Anonymous: the token server hands out a token that grants nothing, the registry refuses it.
    for variable, value in (("REGISTRY_AUTH_FILE", tmp_path / "none.json"), ("HOME", tmp_path),
                            ("XDG_RUNTIME_DIR", tmp_path), ("XDG_CONFIG_HOME", tmp_path), ("DOCKER_CONFIG", tmp_path)):
        monkeypatch.setenv(variable, str(value))
    with pytest.raises(AuthenticationFailed, match=rf"layerstore login {registry.host}"):
        pull(store, reference, options=RegistryOptions(ca_file=str(registry.ca_file)))
    assert server.requests()[-1]["outcome"] == "anonymous"


def _push_loaded(store: ImageStore, images: dict[str, Path], registry: LocalRegistry, password: str) -> None:
    from layerstore.images.archives import open_sources

    [source] = open_sources(images["umoci"])
    try:
        image = store.load(source)
    finally:
        source.close()
    push(store, image.id, f"{registry.host}/team/x:v1", options=secure_options(registry, password=password))


def test_expired_token_is_refreshed(images: dict[str, Path], token_registry: TokenRegistry) -> None:
    from layerstore.images import Descriptor
    from layerstore.registry.blobs import BlobReader
    from layerstore.registry.client import RegistryClient
    from layerstore.registry.manifests import get_manifest

    registry, server = token_registry
    reference = push_with_skopeo(images["umoci"], registry)
    with RegistryClient(registry.host, secure_options(registry)) as client:
        client.authenticate("")  # learns the challenge: later scopes get their token before the request
        mark, log_mark = len(server.requests()), len(registry.access_log())
        # The next token claims to live 300 s but has expired by the registry's clock: the registry refuses
        # it, the client drops it and asks again.
        server.expire_next()
        data, _ = get_manifest(client, REPO, TAG)
        assert [r["outcome"] for r in server.requests()[mark:]] == ["expired", "granted"]
        assert _scopes(server.requests()[mark:]) == [[f"repository:{REPO}:pull"]] * 2
        assert [r[2] for r in registry.access_log()[log_mark:]] == [401, 200]
        # The new token is cached: the blobs need no other.
        layer = Descriptor.from_json(json.loads(data)["layers"][0])
        with BlobReader(client, REPO, layer) as reader:
            while reader.read(1 << 20):
                pass
        assert len(server.requests()) == mark + 2
    assert reference.endswith(f"{REPO}:{TAG}")


def test_a_token_without_access_is_no_wrong_password(store: ImageStore, images: dict[str, Path],
                                                     token_registry: TokenRegistry) -> None:
    registry, server = token_registry
    push_with_skopeo(images["umoci"], registry)
    server.expire_next()  # a token the registry refuses although the credentials were right
    with pytest.raises(AuthenticationFailed, match=rf"refused '{registry.username}' access to "
                                                   rf"repository:{REPO}:pull; check the repository name"):
        pull(store, f"{registry.host}/{REPO}:{TAG}", options=secure_options(registry))
    assert_empty(store)


def test_plain_http_token_server_needs_insecure(token_registry: TokenRegistry) -> None:
    from layerstore.registry.client import RegistryClient

    registry, server = token_registry
    with RegistryClient(registry.host, secure_options(registry)) as client, \
            pytest.raises(RegistryError, match=r"not HTTPS; pass --insecure"):
        client.auth.answer(f'Bearer realm="http://127.0.0.1:{server.port}/token",service="x"', "", None)


def test_cli_login_pull_push(cli: Any, images: dict[str, Path], token_registry: TokenRegistry,
                             tmp_path: Path) -> None:
    registry, _ = token_registry
    reference = push_with_skopeo(images["umoci"], registry)
    ca = str(registry.ca_file)
    wrong = cli("login", registry.host, "-u", registry.username, "--password-stdin", "--ca-file", ca,
                input="not-the-password\n")
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "refused" in wrong.stderr
    assert "Traceback" not in wrong.stderr and "not-the-password" not in wrong.stderr
    good = cli("login", registry.host, "-u", registry.username, "--password-stdin", "--ca-file", ca,
               input=registry.password + "\n")
    assert good.returncode == 0, good.stderr

    pulled = cli("pull", "--ca-file", ca, "--json", reference)
    assert pulled.returncode == 0, pulled.stderr
    data = json.loads(pulled.stdout)
    assert_json_schema(data)
    assert data["id"] == skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    pushed = cli("push", "--ca-file", ca, "--json", reference, f"{registry.host}/team/cli:v1")
    assert pushed.returncode == 0, pushed.stderr
    result = json.loads(pushed.stdout)
    assert_json_schema(result)
    assert (result["blobs_mounted"], result["blobs_uploaded"]) == (3, 0)
    images_out = cli("images", "--json")
    assert_json_schema(json.loads(images_out.stdout))
