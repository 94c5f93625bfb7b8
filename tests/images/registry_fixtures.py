"""Fixtures of the registry tests: Debian's docker-registry (plain; TLS with basic auth; TLS with bearer tokens
from the token server of `token_issuer`), images pushed by skopeo.

Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from images_helpers import TAG

from layerstore.images import ImageStore
from layerstore.registry import Credentials, RegistryOptions
from layerstore.testing.registry import LocalRegistry, TokenAuth, free_port, require_tools, skopeo, start_server

REPO = "test/app"
_ISSUER_SCRIPT = Path(__file__).with_name("token_issuer.py")


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


class _JoiningServer(http.server.ThreadingHTTPServer):
    """A threading server whose `server_close` waits for every request thread.

    The standard one runs requests on daemon threads that outlive it while a
    client keeps its connection open, and a later test that needs a
    single-threaded process (tar-split recording in a forked worker) would
    see them.
    """

    daemon_threads = False


class TokenServer:
    """The test's token server (`token_issuer`) as a process of its own, stopped by its pid."""

    def __init__(self, directory: Path, registry: LocalRegistry, key: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        settings = {"username": registry.username, "password": registry.password, "service": "layerstore-test",
                    "issuer": "layerstore-test-issuer", "key": str(key), "port": port,
                    "tls_certificate": str(registry.tls_certificate), "tls_key": str(registry.tls_key)}
        (directory / "issuer.json").write_text(json.dumps(settings))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._process = start_server([sys.executable, str(_ISSUER_SCRIPT), str(self.directory)],
                                     self.directory / "issuer.log", self.port)

    def stop(self) -> None:
        """Stop the server by its pid and reap it."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait()

    def requests(self) -> list[dict[str, Any]]:
        """The token requests served so far (scopes, account, outcome), oldest first."""
        path = self.directory / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def expire_next(self) -> None:
        """Issue the next token already expired (the registry refuses it; the client must ask again)."""
        (self.directory / "expire-next").touch()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    """A docker-registry behind TLS that accepts only bearer tokens signed by the test's token server."""
    require_tools("docker-registry", "skopeo", "openssl")
    directory = tmp_path / "token-server"
    directory.mkdir()
    key, certificate = directory / "signing.key", directory / "signing.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(certificate), "-days", "2", "-subj", "/CN=layerstore test token signer"],
                   capture_output=True, check=True)
    port = free_port()
    auth = TokenAuth(realm=f"https://127.0.0.1:{port}/token", service="layerstore-test",
                     issuer="layerstore-test-issuer", certificate=certificate)
    registry = LocalRegistry(tmp_path / "token-registry", secure=True, token=auth)
    server = TokenServer(directory, registry, key, port)
    server.start()
    try:
        with registry:
            yield registry, server
    finally:
        server.stop()


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

    def run(*args: str | os.PathLike[str], input: str | None = None,
            tty: bool = False) -> subprocess.CompletedProcess[str]:
        if tty:
            return _run_on_terminal([executable, *map(str, args)], env)
        return subprocess.run([executable, *map(str, args)], input=input, capture_output=True, text=True, env=env,
                              check=False, stdin=None if input is not None else subprocess.DEVNULL)

    return run


def _run_on_terminal(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` with its standard error on a pseudo-terminal (what a user sees); stdout stays a pipe."""
    master, slave = os.openpty()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env) as process:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        returncode = process.wait()
    return subprocess.CompletedProcess(argv, returncode, stdout, b"".join(chunks).decode(errors="replace"))


def blob_file(registry: LocalRegistry, digest: str) -> Path:
    """Where the registry's filesystem storage keeps blob `digest`."""
    hexdigest = digest.partition(":")[2]
    return registry.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


class FlakyProxy:
    """A plain-HTTP reverse proxy (a thread of the test) in front of `registry` that answers the first
    `failures` blob GETs with ``503 Service Unavailable`` and passes everything else through, streaming."""

    def __init__(self, registry: LocalRegistry, failures: int) -> None:
        self.failures = failures
        self.served_503 = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 2  # an idle keep-alive connection ends, so that closing the proxy can wait for it

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                if "/blobs/sha256:" in self.path and self.command == "GET" and proxy._take_failure():
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(key, value)
                if answer.getheader("Content-Length") is None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    while block := answer.read(1 << 16):
                        self.wfile.write(block)
                upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self._server = _JoiningServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take_failure(self) -> bool:
        with self._lock:
            if self.served_503 < self.failures:
                self.served_503 += 1
                return True
            return False

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
