"""The HTTP side of a registry: one connection pool per registry, TLS, retries, authentication.

`RegistryClient` speaks to one registry's ``/v2/`` API through urllib3 (a
thread-safe connection pool that streams bodies both ways).  It verifies TLS
against the system CA store plus ``ca_file``; plain HTTP and unverified TLS
happen only with ``insecure=True``.  Connection errors and 5xx answers are
retried with exponential backoff (requests whose body is a stream are not:
their callers resume on their own).  A 401 runs the challenge flow of
`layerstore.registry.auth` and retries once with the answer.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlencode, urljoin, urlsplit

import attrs
import urllib3
from urllib3.exceptions import HTTPError, InsecureRequestWarning, MaxRetryError, SSLError

from ..errors import RegistryError
from ..images.reference import registry_endpoint
from .auth import Authenticator
from .credentials import Credentials, find_credentials

__all__ = ["RegistryClient", "RegistryOptions", "Response"]

Response = urllib3.BaseHTTPResponse

_RETRY_STATUS = frozenset({500, 502, 503, 504, 429})
_CONNECT_TIMEOUT = 30.0
_READ_TIMEOUT = 300.0
_MAX_ERROR_BODY = 64 * 1024


@attrs.frozen(kw_only=True)
class RegistryOptions:
    """How to reach registries: TLS, credentials, retries (one set for a whole pull or push).

    `insecure` allows plain HTTP and unverified TLS; `ca_file` adds a CA
    bundle to the system store; `credentials` overrides the credential files
    (None reads them); `retries` and `backoff` bound the retries of
    connection errors and 5xx answers (delays backoff, 2*backoff, ... capped
    at 8 s).
    """

    insecure: bool = False
    ca_file: str | None = None
    credentials: Credentials | None = None
    retries: int = 6
    backoff: float = 0.5


def _finish(response: Response) -> None:
    """Read the rest of `response` and return its connection to the pool.

    A connection returned with its response body unread is broken for the
    next request on it (``ResponseNotReady``), which then costs a retry and
    its back-off, or fails outright for a streamed upload.
    """
    with contextlib.suppress(HTTPError, OSError):
        response.drain_conn()
    response.release_conn()


def _error_detail(response: Response) -> str:
    try:
        body = response.read(_MAX_ERROR_BODY, decode_content=True)
    except HTTPError:
        return ""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        return "; ".join(p for p in parts if p)
    except (ValueError, AttributeError):
        return " ".join(body.decode("utf-8", "replace").split())[:200]


def error_codes(response: Response) -> tuple[str, str]:
    """(first error code, detail text) of a registry error answer; reads the body."""
    detail = _error_detail(response)
    return detail.split(":", 1)[0].strip() if detail else "", detail


class RegistryClient:
    """Requests to one registry's API (``https://host/v2/...``); thread-safe; close it when done."""

    def __init__(self, registry: str, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self.registry = registry
        self.host = registry_endpoint(registry)
        credentials = self.options.credentials
        if credentials is None:
            credentials = find_credentials(registry)
        if self.options.insecure:
            # Nothing will be verified, so the system's CA certificates (about 16 ms to load) are not.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # The user asked for it; urllib3's per-request warning would only repeat that.
            urllib3.disable_warnings(InsecureRequestWarning)
        else:
            context = ssl.create_default_context()
        if self.options.ca_file:
            try:
                context.load_verify_locations(cafile=self.options.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"cannot load the CA file {self.options.ca_file}: {exc}") from None
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=16, ssl_context=context,
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT, read=_READ_TIMEOUT),
        )
        self._scheme_lock = threading.Lock()
        self._scheme: str | None = None if self.options.insecure else "https"
        self.auth = Authenticator(registry, credentials, self._fetch_token)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs ---------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``scheme://host`` of the registry (probing HTTPS, then HTTP, when insecure)."""
        with self._scheme_lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme()
            return f"{self._scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        for scheme in ("https", "http"):
            try:
                response = self._raw("GET", f"{scheme}://{self.host}/v2/", {}, None, retries=0)
                _finish(response)
                return scheme
            except RegistryError:
                continue
        return "https"

    def url(self, path: str) -> str:
        """The absolute URL of `path` (``/v2/...``) or of a Location header (relative or absolute)."""
        return urljoin(self.base_url + "/", path)

    # -- requests -----------------------------------------------------------------------------------

    def _raw(self, method: str, url: str, headers: Mapping[str, str], body: bytes | IO[bytes] | None,
             *, retries: int | None = None) -> Response:
        """One request with retries of connection errors and 5xx (only when the body can be sent again)."""
        attempts = (self.options.retries if retries is None else retries) + 1
        if body is not None and not isinstance(body, bytes):
            attempts = 1
        delay = self.options.backoff
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._pool.request(
                    method, url, headers=dict(headers), body=body, preload_content=False,
                    retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
                )
            except MaxRetryError as exc:
                if isinstance(exc.reason, SSLError):
                    raise self._tls_error(exc.reason) from None
                if last:
                    raise self._unreachable(method, url, exc.reason or exc) from None
            except SSLError as exc:
                raise self._tls_error(exc) from None
            except HTTPError as exc:
                if last:
                    raise self._unreachable(method, url, exc) from None
            else:
                if response.status not in _RETRY_STATUS or last:
                    return response
                response.drain_conn()
                response.release_conn()
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, method: str, url: str, reason: object) -> RegistryError:
        text = " ".join(str(reason).split())
        if "Connection refused" in text or "NewConnectionError" in text:
            text = "connection refused"
        return RegistryError(
            f"registry {self.registry} is unreachable ({method} {url.split('?', 1)[0]}: {text}); "
            f"check that it runs and retry"
        )

    def _tls_error(self, exc: BaseException) -> RegistryError:
        text = str(exc)
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text or "record layer" in text:
            return RegistryError(
                f"registry {self.registry} speaks plain HTTP, not HTTPS; "
                f"pass --insecure only if you trust the network to it"
            )
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return RegistryError(
                f"the TLS certificate of registry {self.registry} is not trusted; "
                f"pass --ca-file with its CA, or --insecure to skip verification"
            )
        return RegistryError(f"TLS with registry {self.registry} failed: {' '.join(text.split())}")

    def request(self, method: str, path: str, *, scope: str, headers: Mapping[str, str] | None = None,
                body: bytes | IO[bytes] | None = None, retries: int | None = None) -> Response:
        """Send a request needing `scope` (``repository:name:pull``); the response body is not read yet.

        Authentication is added and a 401 answered once; any other status is
        returned as it is (callers decide what 404 means).
        """
        url = self.url(path)
        sent = dict(headers or {})
        authorization = self.auth.header(scope)
        if authorization:
            sent["Authorization"] = authorization
        response = self._raw(method, url, sent, body, retries=retries)
        if response.status != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate")
        response.drain_conn()
        response.release_conn()
        if body is not None and not isinstance(body, bytes):
            # A stream cannot be sent twice; callers authenticate the scope first (see `authenticate`), so a
            # refusal here is a token that expired meanwhile: forget it, and let a new attempt get another.
            self.auth.forget(scope)
            raise RegistryError(f"registry {self.registry} refused the authorization of {method} "
                                f"{path.split('?', 1)[0]} mid-transfer (an expired token?); retry")
        sent["Authorization"] = self.auth.answer(challenge, scope, authorization)
        response = self._raw(method, url, sent, body, retries=retries)
        if response.status == 401:
            response.drain_conn()
            response.release_conn()
            raise self.auth.refused_request(sent["Authorization"], scope)
        return response

    def authenticate(self, scope: str) -> None:
        """Make sure a token (or basic credentials) for `scope` is known, by a ``GET /v2/`` if need be."""
        response = self.request("GET", "/v2/", scope=scope)
        status = response.status
        detail = _error_detail(response) if status != 200 else ""
        _finish(response)
        if status != 200:
            raise RegistryError(f"registry {self.registry} answered {status} to GET /v2/ ({detail or 'no detail'})")

    def check(self, response: Response, what: str) -> None:
        """Raise `RegistryError` naming `what` for an unexpected status (reads and releases the body)."""
        detail = _error_detail(response)
        _finish(response)
        raise RegistryError(f"registry {self.registry}: {what} failed with HTTP {response.status}"
                            + (f" ({detail})" if detail else ""))

    def _fetch_token(self, realm: str, params: list[tuple[str, str]], authorization: str | None) -> dict[str, Any]:
        if urlsplit(realm).scheme != "https" and not self.options.insecure:
            raise RegistryError(
                f"registry {self.registry} sends clients for tokens to {realm}, which is not HTTPS; "
                f"pass --insecure only if you trust the network to it"
            )
        headers = {"Authorization": authorization} if authorization else {}
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        response = self._raw("GET", url, headers, None)
        try:
            if response.status in (401, 403):
                raise self.auth.refused()
            if response.status != 200:
                self.check(response, "the token request")
            data = json.loads(response.read(_MAX_ERROR_BODY, decode_content=True))
        except ValueError:
            raise RegistryError(f"the token server of registry {self.registry} answered with invalid JSON") from None
        finally:
            response.release_conn()
        if not isinstance(data, dict):
            raise RegistryError(f"the token server of registry {self.registry} answered with invalid JSON")
        return data
