"""The challenge flow: parsing WWW-Authenticate, basic auth, bearer tokens cached per scope."""

from __future__ import annotations

from typing import Any

import pytest

from layerstore.errors import AuthenticationFailed, RegistryError
from layerstore.registry.auth import Authenticator, basic_header, parse_challenge
from layerstore.registry.credentials import Credentials


def test_parse_challenge() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push"')
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                                "scope": "repository:team/app:pull,push"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"


class _TokenServer:
    """Records token requests; hands out numbered tokens."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[tuple[str, str]], str | None]] = []

    def __call__(self, realm: str, params: list[tuple[str, str]], authorization: str | None) -> dict[str, Any]:
        self.requests.append((realm, params, authorization))
        return {"token": f"t{len(self.requests)}", "expires_in": 300}


def test_bearer_tokens_are_cached_per_scope() -> None:
    server = _TokenServer()
    auth = Authenticator("r.example", Credentials("me", "pw"), server)
    assert auth.header("repository:a:pull") is None
    challenge = 'Bearer realm="https://r.example/token",service="r.example"'
    assert auth.answer(challenge, "repository:a:pull", None) == "Bearer t1"
    assert server.requests[0][1] == [("service", "r.example"), ("scope", "repository:a:pull"), ("account", "me")]
    assert server.requests[0][2] == basic_header(Credentials("me", "pw"))
    assert auth.header("repository:a:pull") == "Bearer t1"  # cached
    assert auth.header("repository:b:pull") == "Bearer t2"  # another scope: a token of its own
    assert len(server.requests) == 2
    # Two scopes (a cross-repository mount): one parameter each, one cached token for the pair.
    mount = "repository:b:pull,push repository:a:pull"
    assert auth.header(mount) == "Bearer t3"
    assert [v for k, v in server.requests[2][1] if k == "scope"] == ["repository:b:pull,push", "repository:a:pull"]
    assert auth.header(mount) == "Bearer t3"


def test_basic_and_refusals() -> None:
    auth = Authenticator("r.example", Credentials("me", "pw"), _TokenServer())
    header = auth.answer('Basic realm="r"', "", None)
    assert header == basic_header(Credentials("me", "pw"))
    assert auth.header("anything") == header
    with pytest.raises(AuthenticationFailed, match="refused the user name or password"):
        auth.answer('Basic realm="r"', "", header)
    anonymous = Authenticator("r.example", None, _TokenServer())
    with pytest.raises(AuthenticationFailed, match=r"layerstore login r\.example"):
        anonymous.answer('Basic realm="r"', "", None)
    with pytest.raises(RegistryError, match="does not describe"):
        anonymous.answer(None, "", None)


def test_tokens_are_renewed_before_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import layerstore.registry.auth as auth_module

    now = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
    server = _TokenServer()
    auth = Authenticator("r.example", Credentials("me", "pw"), server)
    auth.answer('Bearer realm="https://r.example/token"', "repository:a:pull", None)
    assert auth.header("repository:a:pull") == "Bearer t1"
    now[0] += 300 - 11  # expires_in 300: still used until shortly before the end
    assert auth.header("repository:a:pull") == "Bearer t1"
    now[0] += 2
    assert auth.header("repository:a:pull") == "Bearer t2"
    # A token the registry refuses although it looks valid is forgotten: the next request gets another.
    auth.forget("repository:a:pull")
    assert auth.header("repository:a:pull") == "Bearer t3"
