"""Image metadata (the Docker v1 image JSON) and the rules for image IDs.

An `Image` reads and writes the JSON that the Docker engine kept in
``graph/<id>/json``: the same field names (``container_config``,
``docker_version``, ``Size`` without a tag), ``created`` as RFC 3339 with
nanoseconds, and every field this version does not know kept as it was, so
that a load/save round trip loses nothing.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from .errors import CorruptMetadata, InvalidID

__all__ = [
    "ID_LENGTH",
    "Image",
    "format_created",
    "generate_id",
    "go_architecture",
    "is_valid_id",
    "validate_id",
]

ID_LENGTH = 64
SHORT_ID_LENGTH = 12
_ID_RE = re.compile(r"[0-9a-f]{64}")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
# Known JSON keys in the order the Docker engine wrote them.
_KNOWN_KEYS = (
    "id",
    "parent",
    "comment",
    "created",
    "container",
    "container_config",
    "docker_version",
    "author",
    "config",
    "architecture",
    "os",
    "Size",
)
_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
            "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64", "mips64": "mips64"}


def generate_id() -> str:
    """Return a new random image ID: 64 lowercase hex characters.

    Like the Docker engine, an ID whose 12-character short form is all digits
    is drawn again, so a short ID never reads as a number (nor is a whole ID
    ever all digits).
    """
    while True:
        candidate = os.urandom(ID_LENGTH // 2).hex()
        if not candidate[:SHORT_ID_LENGTH].isdigit():
            return candidate


def is_valid_id(value: str) -> bool:
    """True when `value` is a full image ID (64 lowercase hex characters)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: str) -> str:
    """Return `value` if it is a full image ID, else raise `InvalidID` saying what an ID looks like."""
    if not is_valid_id(value):
        raise InvalidID(f"invalid image ID {value!r}: an image ID is 64 lowercase hexadecimal characters")
    return value


def format_created(ns: int | None = None) -> str:
    """Format nanoseconds since the epoch (default: now) as Go's RFC 3339 with nanoseconds, in UTC.

    Trailing zeros of the fraction are dropped, as Go's ``time.RFC3339Nano`` does.
    """
    if ns is None:
        ns = time.time_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _check_created(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if _RFC3339_RE.fullmatch(value) is None:
        raise ValueError(f"created {value!r} is not an RFC 3339 timestamp")


def go_architecture() -> str:
    """The architecture of this machine in Go's naming (``amd64``, ``arm64``), as Docker records it."""
    machine = platform.machine().lower()
    return _GO_ARCH.get(machine, machine)


def _optional_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def _empty_to_none(value: str | None) -> str | None:
    return value or None


@attrs.define(kw_only=True, eq=True)
class Image:
    """One image: a layer ID, its parent, and the Docker v1 metadata.

    `parent` is None for a base image.  `created` is the RFC 3339 text as
    stored (nanosecond precision); `created_at` gives it as a datetime.
    `size` is the layer size in bytes (JSON ``Size``).  Unknown JSON fields
    live in `extra` and are written back unchanged.
    """

    id: str = attrs.field(validator=lambda _i, _a, v: validate_id(v))
    parent: str | None = attrs.field(default=None, converter=_empty_to_none)
    comment: str = ""
    created: str = attrs.field(factory=format_created, validator=_check_created)
    container: str = ""
    container_config: dict[str, Any] | None = attrs.field(default=None, converter=_optional_mapping)
    docker_version: str = ""
    author: str = ""
    config: dict[str, Any] | None = attrs.field(default=None, converter=_optional_mapping)
    architecture: str = ""
    os: str = ""
    size: int = 0
    extra: dict[str, Any] = attrs.field(factory=dict)

    @parent.validator
    def _check_parent(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None:
            validate_id(value)
            if value == self.id:
                raise InvalidID(f"image {self.id} cannot be its own parent")

    @property
    def short_id(self) -> str:
        """The first 12 characters of the ID, as ``docker images`` shows it."""
        return self.id[:SHORT_ID_LENGTH]

    @property
    def created_at(self) -> datetime:
        """`created` as an aware datetime (microsecond precision; the text keeps nanoseconds)."""
        m = _RFC3339_RE.fullmatch(self.created)
        if m is None:  # cannot happen after validation; keeps mypy and callers honest
            raise ValueError(f"created {self.created!r} is not an RFC 3339 timestamp")
        micro = (m.group(7) or "0").ljust(9, "0")[:6]
        tz = m.group(8).upper()
        text = f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}.{micro}"
        text += "+00:00" if tz == "Z" else tz
        return datetime.fromisoformat(text)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this image, keys in Docker's order, then the unknown fields."""
        data: dict[str, Any] = {"id": self.id}
        if self.parent:
            data["parent"] = self.parent
        if self.comment:
            data["comment"] = self.comment
        data["created"] = self.created
        if self.container:
            data["container"] = self.container
        if self.container_config is not None:
            data["container_config"] = self.container_config
        if self.docker_version:
            data["docker_version"] = self.docker_version
        if self.author:
            data["author"] = self.author
        if self.config is not None:
            data["config"] = self.config
        if self.architecture:
            data["architecture"] = self.architecture
        if self.os:
            data["os"] = self.os
        data["Size"] = self.size
        for key, value in self.extra.items():
            if key not in data:
                data[key] = value
        return data

    def to_json(self) -> bytes:
        """Serialise as the compact JSON the engine wrote (UTF-8, newline-terminated)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "image JSON") -> Image:
        """Build an image from a decoded JSON object; `CorruptMetadata` (naming `source`) when it does not fit."""
        if not isinstance(data, Mapping):
            raise CorruptMetadata(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            created = data.get("created")
            if created is None:
                created = format_created(0)
            size = data.get("Size", 0)
            if isinstance(size, bool) or not isinstance(size, int):
                raise ValueError(f"Size {size!r} is not an integer")
            strings = {}
            for key in ("comment", "container", "docker_version", "author", "architecture", "os"):
                value = data.get(key, "")
                if not isinstance(value, str):
                    raise ValueError(f"{key} {value!r} is not a string")
                strings[key] = value
            for key in ("container_config", "config"):
                value = data.get(key)
                if value is not None and not isinstance(value, Mapping):
                    raise ValueError(f"{key} is not a JSON object")
            return cls(
                id=data.get("id", ""),
                parent=data.get("parent") or None,
                created=created,
                container_config=data.get("container_config"),
                config=data.get("config"),
                size=size,
                extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
                **strings,
            )
        except (InvalidID, ValueError, TypeError) as exc:
            raise CorruptMetadata(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, raw: bytes | str, *, source: str = "image JSON") -> Image:
        """Parse the engine's image JSON; `CorruptMetadata` naming `source` when it is not valid."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptMetadata(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=source)
