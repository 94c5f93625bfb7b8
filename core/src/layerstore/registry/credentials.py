"""Registry credentials in the files Podman and Docker already write.

Read, first match wins:

1. ``$REGISTRY_AUTH_FILE`` when it is set (then nothing else is read),
2. ``$XDG_RUNTIME_DIR/containers/auth.json`` (Podman, Buildah, Skopeo),
3. ``~/.docker/config.json`` (Docker).

Both formats are ``{"auths": {"<registry>": {"auth": base64("user:password")}}}``;
keys may carry a scheme or a path (``https://index.docker.io/v1/``), which are
ignored when matching a registry.  Credential helpers (``credHelpers``,
``credsStore``) are not run, and OAuth identity tokens are not used.  `store_credentials` writes the first file of the
list that applies (``$REGISTRY_AUTH_FILE``, else Podman's file when
``$XDG_RUNTIME_DIR`` is set, else Docker's) atomically with mode 0600 and keeps
every other key of the file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError
from ..images.reference import DEFAULT_REGISTRY

__all__ = ["Credentials", "auth_files", "find_credentials", "remove_credentials", "store_credentials"]

# Docker writes Docker Hub's credentials under its legacy index URL.
_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@attrs.frozen(repr=False)
class Credentials:
    """A user name and password (or identity token) for one registry; `repr` never shows the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def auth_files() -> list[Path]:
    """The credential files read, in order (only the first exists-and-matches counts)."""
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [Path(explicit)]
    files = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        files.append(Path(runtime) / "containers" / "auth.json")
    files.append(Path.home() / ".docker" / "config.json")
    return files


def _write_target() -> Path:
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "containers" / "auth.json"
    return Path.home() / ".docker" / "config.json"


def _normalise_key(key: str) -> str:
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_KEYS else host


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read credential file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ConfigError(f"credential file {path} is not valid JSON; fix or remove it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"credential file {path} does not hold a JSON object; fix or remove it")
    return data


def _decode(path: Path, key: str, entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if not auth and "username" in entry:
        return Credentials(str(entry["username"]), str(entry.get("password", "")))
    if not isinstance(auth, str) or not auth:
        return None
    try:
        user, sep, password = base64.b64decode(auth, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError(f"credential file {path}: the entry for {key} is not base64 of user:password") from None
    if not sep:
        raise ConfigError(f"credential file {path}: the entry for {key} has no ':' between user and password")
    return Credentials(user, password)


def find_credentials(registry: str) -> Credentials | None:
    """The stored credentials for `registry` (``host[:port]``, ``docker.io`` for Docker Hub), or None."""
    wanted = _normalise_key(registry)
    for path in auth_files():
        auths = _read(path).get("auths")
        if not isinstance(auths, dict):
            continue
        # An exact key beats one that only matches after normalising (a per-repository key, a URL).
        for key in sorted(auths, key=lambda k: k != registry):
            if _normalise_key(key) == wanted:
                found = _decode(path, key, auths[key])
                if found is not None:
                    return found
    return None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            json.dump(data, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store_credentials(registry: str, credentials: Credentials) -> Path:
    """Save `credentials` for `registry`; returns the file written (mode 0600, other entries kept)."""
    path = _write_target()
    data = _read(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    wanted = _normalise_key(registry)
    for key in [k for k in auths if _normalise_key(k) == wanted]:
        del auths[key]
    raw = f"{credentials.username}:{credentials.password}".encode()
    auths[registry] = {"auth": base64.b64encode(raw).decode("ascii")}
    data["auths"] = auths
    _write(path, data)
    return path


def remove_credentials(registry: str) -> list[Path]:
    """Remove the entries for `registry` from every credential file read; returns the files changed."""
    wanted = _normalise_key(registry)
    changed = []
    for path in auth_files():
        data = _read(path)
        auths = data.get("auths")
        if not isinstance(auths, dict):
            continue
        keys = [k for k in auths if _normalise_key(k) == wanted]
        if not keys:
            continue
        for key in keys:
            del auths[key]
        _write(path, data)
        changed.append(path)
    return changed
