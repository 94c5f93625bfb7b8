"""A real registry for tests: Debian's ``docker-registry`` (the reference distribution server).

`LocalRegistry` writes a config (storage under the given directory, listening
on a free port of 127.0.0.1 only), starts ``docker-registry serve`` as its
own process and stops it by that pid.  With ``secure=True`` it serves TLS
with a certificate signed by a CA made here with ``openssl`` (`ca_file`) and
requires HTTP basic auth from an htpasswd file of bcrypt hashes (made by
Apache's ``htpasswd -B``); with a `TokenAuth` as well, it requires bearer
tokens from that token server instead (the distribution token protocol),
trusting the signing certificate `TokenAuth.certificate`.  `kill` and
`start` simulate a crash and a restart on the same port and storage.

`skopeo` runs skopeo (the independent client the tests compare with).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs

from . import driver_required

__all__ = ["LocalRegistry", "TokenAuth", "free_port", "require_tools", "skopeo", "start_server"]

USERNAME = "layerstore"
# One line of the access log (Apache combined format): "METHOD PATH HTTP/x" STATUS.
_ACCESS_RE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3}) ')
_READY_ATTEMPTS = 400


def require_tools(*tools: str) -> None:
    """Skip the test (fail under CI) when one of `tools` is not installed."""
    import pytest

    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    message = f"missing tools: {', '.join(missing)} (install the Debian packages of the Makefile's APT_PACKAGES)"
    if driver_required("registry"):
        pytest.fail(message)
    pytest.skip(message)


def _run(argv: Sequence[str | os.PathLike[str]]) -> subprocess.CompletedProcess[str]:
    args = [os.fspath(a) for a in argv]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(argv: Sequence[str], log_path: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a server process (its own session; output appended to `log_path`) and wait until it accepts
    connections on 127.0.0.1:`port`; a server that exits or never listens is killed and `RuntimeError`."""
    log = open(log_path, "ab")  # noqa: SIM115 -- handed to the child
    try:
        process = subprocess.Popen(list(argv), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    finally:
        log.close()
    for _ in range(_READY_ATTEMPTS):
        if process.poll() is not None:
            text = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[0]} exited at start: {text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return process
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"{argv[0]} did not listen on 127.0.0.1:{port}")


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ec: list[str | os.PathLike[str]] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
          "-subj", "/CN=layerstore test CA"])
    _run(["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
          "-out", crt, "-days", "2", "-extfile", ext])
    return ca_crt, crt, key


@attrs.frozen(kw_only=True)
class TokenAuth:
    """Bearer token authentication of a `LocalRegistry`: where clients get tokens (`realm`), the `service`
    and `issuer` names the tokens must carry, and the PEM `certificate` whose key signs them."""

    realm: str
    service: str
    issuer: str
    certificate: Path


class LocalRegistry:
    """One ``docker-registry`` on 127.0.0.1; `host` is ``127.0.0.1:<port>``; use as a context manager.

    `tls_certificate` and `tls_key` (secure registries only) are the server's,
    valid for 127.0.0.1 and signed by `ca_file`: a token server of the test
    may serve with them too.
    """

    def __init__(self, directory: Path, *, secure: bool = False, token: TokenAuth | None = None) -> None:
        if token is not None and not secure:
            raise ValueError("token authentication needs secure=True (TLS)")
        self.directory = directory
        self.storage = directory / "storage"
        self.secure = secure
        self.token = token
        self.tls_certificate: Path | None = None
        self.tls_key: Path | None = None
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.username = USERNAME
        self.password = secrets.token_urlsafe(12)
        self.ca_file: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._config = directory / "config.yml"
        directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.secure:
            self.ca_file, crt, key = _make_certificates(self.directory)
            self.tls_certificate, self.tls_key = crt, key
            lines += [
                "  tls:",
                f"    certificate: {crt}",
                f"    key: {key}",
            ]
        if self.token is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.realm}",
                f"    service: {self.token.service}",
                f"    issuer: {self.token.issuer}",
                f"    rootcertbundle: {self.token.certificate}",
            ]
        elif self.secure:
            htpasswd = self.directory / "htpasswd"
            result = _run(["htpasswd", "-Bbn", self.username, self.password])
            htpasswd.write_text(result.stdout)
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: layerstore-test",
                f"    path: {htpasswd}",
            ]
        self._config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        return f"{'https' if self.secure else 'http'}://{self.host}"

    @property
    def pid(self) -> int | None:
        """The registry's process ID while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the registry (again, on the same port and storage) and wait until it accepts connections."""
        if self._process is not None:
            return
        self._process = start_server(["docker-registry", "serve", str(self._config)],
                                     self.directory / "registry.log", self.port)

    def kill(self) -> None:
        """Kill the registry at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL) and reap it."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def access_log(self) -> list[tuple[str, str, int]]:
        """The requests the registry served so far, as (method, path with query, status), oldest first."""
        try:
            text = (self.directory / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [(m.group(1), m.group(2), int(m.group(3))) for m in _ACCESS_RE.finditer(text)]

    def skopeo_flags(self, prefix: str = "") -> list[str]:
        """skopeo options for this registry (`prefix` ``src`` or ``dest`` for ``copy``, none for ``inspect``)."""
        flag = f"--{prefix}-" if prefix else "--"
        if not self.secure:
            return [f"{flag}tls-verify=false"]
        certs = self.directory / "skopeo-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(str(self.ca_file), certs / "ca.crt")
        return [f"{flag}cert-dir={certs}", f"{flag}creds={self.username}:{self.password}"]

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def skopeo(*args: str) -> str:
    """Run skopeo (no policy prompts: an accept-anything policy of its own); returns stdout."""
    return _run(["skopeo", "--insecure-policy", *args]).stdout
