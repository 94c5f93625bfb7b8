"""A small token server of the distribution token protocol, for docker-registry's ``auth: token`` mode.

Run as ``python token_issuer.py DIRECTORY``: it reads ``DIRECTORY/issuer.json``
(user name, password, service, issuer name, the RSA private key made by
``openssl`` that signs tokens, the port, and the TLS certificate and key to
serve HTTPS with), listens on 127.0.0.1 and serves
``GET /token?service=...&scope=...&account=...``:

* wrong credentials: 401;
* right credentials: a JWT (RS256, signed by ``openssl dgst``, the key named
  by its libtrust key ID in ``kid``, as the registry looks it up in its
  ``rootcertbundle``) granting every requested action of every requested
  ``repository:<name>:<actions>`` scope;
* no credentials: a token granting nothing (the registry then refuses the
  request with 401, as Docker Hub does for a private repository).

Every token request is appended to ``DIRECTORY/requests.jsonl`` (scopes,
account, outcome) so that tests can count them.  While the file
``DIRECTORY/expire-next`` exists, the next token is issued already expired
(past the registry's 60 s leeway, with an ``expires_in`` that claims
otherwise) and the file is removed: the registry refuses that token and the
client must get a new one.

Only the standard library and the ``openssl`` program are used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_LIFE = 300
_EXPIRED_AGO = 600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(private_key: Path) -> str:
    """The key ID docker-registry computes for a public key: base32 of the first 240 bits of the sha256 of
    its DER SubjectPublicKeyInfo, in groups of four characters joined by colons."""
    der = subprocess.run(["openssl", "pkey", "-in", str(private_key), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class Issuer:
    """Signs tokens with the key of `settings` and logs requests under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.settings: dict[str, str] = json.loads((directory / "issuer.json").read_text())
        self.key = Path(self.settings["key"])
        self.kid = libtrust_key_id(self.key)

    def _sign(self, signing_input: bytes) -> bytes:
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input,
                              capture_output=True, check=True).stdout

    def token(self, scopes: list[str], account: str | None, *, expired: bool) -> str:
        """A signed JWT granting `scopes` (none for an anonymous client)."""
        access = []
        if account is not None:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    access.append({"type": kind, "name": name, "actions": sorted(set(actions.split(",")))})
        now = int(time.time())
        start = now - _EXPIRED_AGO - TOKEN_LIFE if expired else now
        claims: dict[str, Any] = {
            "iss": self.settings["issuer"], "sub": account or "", "aud": self.settings["service"],
            "exp": start + TOKEN_LIFE, "nbf": start - 10, "iat": start, "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
        return signing_input.decode("ascii") + "." + _b64url(self._sign(signing_input))

    def log(self, entry: dict[str, Any]) -> None:
        """Append one request record."""
        with open(self.directory / "requests.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def take_expire_next(self) -> bool:
        """True (once) when the test asked for an expired token."""
        flag = self.directory / "expire-next"
        try:
            flag.unlink()
        except FileNotFoundError:
            return False
        return True


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._answer(404, {"error": "not found"})
                return
            query = parse_qs(url.query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            account: str | None = None
            authorization = self.headers.get("Authorization", "")
            if authorization:
                scheme, _, encoded = authorization.partition(" ")
                try:
                    user, _, password = base64.b64decode(encoded).decode().partition(":")
                except ValueError:
                    user, password = "", ""
                if (scheme.lower() != "basic" or user != issuer.settings["username"]
                        or password != issuer.settings["password"]):
                    issuer.log({"scopes": scopes, "account": user or None, "outcome": "refused"})
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]})
                    return
                account = user
            expired = account is not None and issuer.take_expire_next()
            token = issuer.token(scopes, account, expired=expired)
            issuer.log({"scopes": scopes, "account": account, "service": query.get("service", [None])[0],
                        "outcome": "expired" if expired else "granted" if account else "anonymous"})
            self._answer(200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFE})

    return Handler


def main(directory: str) -> None:
    """Serve tokens until killed."""
    issuer = Issuer(Path(directory))
    server = ThreadingHTTPServer(("127.0.0.1", int(issuer.settings["port"])), _handler(issuer))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issuer.settings["tls_certificate"], issuer.settings["tls_key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
