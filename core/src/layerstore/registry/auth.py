"""The registry authentication flow: ``WWW-Authenticate`` challenges, basic auth and bearer tokens.

A registry answers a request it wants authenticated with 401 and a
challenge.  ``Basic`` means: send the user name and password with every
request.  ``Bearer realm=...,service=...,scope=...`` means: ask the token
server at `realm` (with the credentials, if any, as basic auth) for a token
valid for that scope, then send ``Authorization: Bearer <token>``.  A scope
is one or more space-separated ``repository:<name>:<actions>`` (a
cross-repository mount needs push on the target and pull on the source);
each goes to the token server as a ``scope`` parameter of its own.  Tokens
are cached per scope until shortly before they expire, so a pull asks once
per repository; a cached token the registry refuses anyway (expired by its
clock) is dropped and a new one asked for.  Credentials and tokens never
appear in messages.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import AuthenticationFailed, RegistryError
from .credentials import Credentials

__all__ = ["Authenticator", "Challenge", "parse_challenge"]

_PARAM_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
# Tokens without expires_in live 60 seconds (the distribution token spec); renew a little early.
_DEFAULT_TOKEN_LIFE = 60.0
_EARLY = 10.0


@attrs.frozen
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge: scheme (lower case) and parameters."""

    scheme: str
    params: dict[str, str] = attrs.field(factory=dict)


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = match.end()
    return Challenge(scheme.lower(), params)


def basic_header(credentials: Credentials) -> str:
    """The ``Authorization`` value of HTTP basic auth."""
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


#: Fetches a token: (realm URL, query parameters in order, Authorization header or None) -> parsed JSON body.
TokenFetcher = Callable[[str, list[tuple[str, str]], "str | None"], dict[str, Any]]


class Authenticator:
    """Chooses the ``Authorization`` header of each request to one registry; thread-safe.

    `header(scope)` is what to send before any challenge is known;
    `answer(challenge, scope)` handles a 401 and returns the header to retry
    with, or raises `AuthenticationFailed` with the fix.
    """

    def __init__(self, registry: str, credentials: Credentials | None, fetch_token: TokenFetcher) -> None:
        self._registry = registry
        self._credentials = credentials
        self._fetch_token = fetch_token
        self._lock = threading.Lock()
        self._basic = False
        self._bearer: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    @property
    def has_credentials(self) -> bool:
        """True when a user name and password are known for this registry."""
        return self._credentials is not None

    def header(self, scope: str) -> str | None:
        """The Authorization header for a request needing `scope`, from what earlier challenges taught."""
        with self._lock:
            if self._basic and self._credentials is not None:
                return basic_header(self._credentials)
            token = self._tokens.get(scope)
            if token is not None and token[1] > time.monotonic():
                return "Bearer " + token[0]
            bearer = self._bearer
        if bearer is not None:
            return self._token_header(bearer, scope)
        return None

    def answer(self, challenge_header: str | None, scope: str, sent: str | None) -> str:
        """The header to retry a request with after a 401 carrying `challenge_header`.

        `sent` is the Authorization header the refused request carried;
        refusing the same credentials twice is a wrong password, not a
        reason to ask again.
        """
        challenge = parse_challenge(challenge_header or "")
        if challenge.scheme == "basic":
            if self._credentials is None:
                raise self._login_needed()
            header = basic_header(self._credentials)
            if sent == header:
                raise self._refused()
            with self._lock:
                self._basic = True
            return header
        if challenge.scheme == "bearer" and "realm" in challenge.params:
            with self._lock:
                self._bearer = challenge
                self._tokens.pop(scope, None)
            header = self._token_header(challenge, scope)
            if sent == header:
                raise self._refused() if self._credentials is not None else self._login_needed()
            return header
        raise RegistryError(
            f"registry {self._registry} asked for authentication it does not describe "
            f"({challenge.scheme or 'no WWW-Authenticate header'})"
        )

    def _token_header(self, challenge: Challenge, scope: str) -> str:
        params = [("service", challenge.params["service"])] if "service" in challenge.params else []
        # A request needing several scopes (a cross-repository mount) asks for each in a parameter of its own.
        params += [("scope", s) for s in scope.split()]
        if self._credentials is not None:
            params.append(("account", self._credentials.username))
        auth = basic_header(self._credentials) if self._credentials is not None else None
        body = self._fetch_token(challenge.params["realm"], params, auth)
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server of {self._registry} answered without a token")
        life = body.get("expires_in")
        seconds = float(life) if isinstance(life, int | float) and life > 0 else _DEFAULT_TOKEN_LIFE
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(seconds - _EARLY, 1.0))
        return "Bearer " + token

    def forget(self, scope: str) -> None:
        """Drop the cached token of `scope` (the registry refused it), so the next request asks for a new one."""
        with self._lock:
            self._tokens.pop(scope, None)

    def refused_request(self, sent: str | None, scope: str) -> AuthenticationFailed:
        """The error for a request refused again after answering the challenge with header `sent`.

        A bearer token the token server just granted for our credentials and
        the registry still refuses means no access to `scope` (a missing
        repository looks the same), not a wrong password.
        """
        if sent is not None and sent.startswith("Bearer ") and self._credentials is not None:
            wanted = ", ".join(scope.split()) or "the registry"
            return AuthenticationFailed(
                f"registry {self._registry} refused {self._credentials.username!r} access to {wanted}; "
                f"check the repository name and the account's permissions"
            )
        return self.refused()

    def refused(self) -> AuthenticationFailed:
        """The error for a registry (or token server) that refused the credentials we sent."""
        return self._refused() if self._credentials is not None else self._login_needed()

    def _refused(self) -> AuthenticationFailed:
        return AuthenticationFailed(
            f"registry {self._registry} refused the user name or password; "
            f"run `layerstore login {self._registry}` with the right ones"
        )

    def _login_needed(self) -> AuthenticationFailed:
        return AuthenticationFailed(
            f"registry {self._registry} requires authentication (or the repository does not exist); "
            f"run `layerstore login {self._registry}`"
        )
