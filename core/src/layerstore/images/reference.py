"""Image references: ``[registry/]repository[:tag][@digest]``, normalised as Docker does.

A short name is completed the way ``docker pull`` completes it: without a
registry it lives on Docker Hub (``docker.io``), a one-component repository
on Docker Hub is an official image (``library/``), and a reference with
neither tag nor digest means the tag ``latest``::

    >>> str(parse_reference("alpine"))
    'docker.io/library/alpine:latest'
    >>> str(parse_reference("localhost:5000/team/app@sha256:" + "0" * 64))
    'localhost:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000'
    >>> parse_reference("docker.io/library/alpine:3.20").familiar()
    'alpine:3.20'

The first path component is a registry when it contains a ``.`` or a ``:``,
or is ``localhost``; otherwise the whole path is a Docker Hub repository.
Repository components are lower case (``[a-z0-9]`` separated by ``.``, ``_``,
``__`` or dashes), tags are at most 128 characters of ``[A-Za-z0-9_.-]`` not
starting with ``.`` or ``-``, and a digest is ``sha256:`` and 64 lower-case hex
digits (``sha512:`` and 128 digits is accepted too).
"""

from __future__ import annotations

import re

import attrs

from ..errors import InvalidReference

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "Reference",
    "is_digest",
    "parse_reference",
    "registry_endpoint",
]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# The host that serves Docker Hub's registry API; "docker.io" itself only redirects.
_DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
_LEGACY_HUB_NAMES = frozenset({"index.docker.io", "registry-1.docker.io"})
_OFFICIAL_NAMESPACE = "library"
_MAX_NAME_LENGTH = 255

_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_REGISTRY_RE = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")


def is_digest(text: str) -> bool:
    """True when `text` is a content digest (``sha256:`` + 64 lower-case hex, or sha512)."""
    return _DIGEST_RE.fullmatch(text) is not None


def registry_endpoint(registry: str) -> str:
    """The host[:port] that serves the registry API for `registry` (Docker Hub's is ``registry-1.docker.io``)."""
    return _DOCKER_HUB_ENDPOINT if registry == DEFAULT_REGISTRY else registry


@attrs.frozen
class Reference:
    """A normalised image reference.

    `registry` is a host[:port] (``docker.io`` for Docker Hub), `repository`
    the path inside it (``library/alpine``), `tag` and `digest` are None when
    absent.  A parsed reference always has a tag or a digest (or both): a bare
    name gets the tag ``latest``.  `str()` is the fully qualified form.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest (``docker.io/library/alpine``)."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        """The same repository with `tag` and no digest."""
        if _TAG_RE.fullmatch(tag) is None:
            raise InvalidReference(f"{tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to `digest`, without tag."""
        if not is_digest(digest):
            raise InvalidReference(f"{digest!r} is not a valid digest (sha256: and 64 lower-case hex digits)")
        return Reference(self.registry, self.repository, None, digest)

    def familiar(self) -> str:
        """The short form Docker prints: ``alpine:3.20``, ``team/app:1``, ``quay.io/x/y@sha256:…``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository
            prefix = _OFFICIAL_NAMESPACE + "/"
            if name.startswith(prefix) and "/" not in name[len(prefix):]:
                name = name[len(prefix):]
        return name + self._suffix()

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag is not None else ""
        return suffix + (f"@{self.digest}" if self.digest is not None else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_registry(path: str) -> tuple[str, str]:
    first, sep, rest = path.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if _REGISTRY_RE.fullmatch(first) is None:
            raise InvalidReference(f"{first!r} is not a valid registry host[:port]")
        registry = DEFAULT_REGISTRY if first in _LEGACY_HUB_NAMES else first
        return registry, rest
    return DEFAULT_REGISTRY, path


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise an image reference.

    `default_tag` is used when the text has neither tag nor digest; pass None
    to keep such a reference bare (for ``push NAME`` style destinations the
    caller completes itself).  Raises `InvalidReference` naming what is wrong:
    upper case in the repository, an empty component, a bad tag or digest, a
    name longer than 255 characters.
    """
    if not text or text != text.strip():
        raise InvalidReference(f"{text!r} is not an image reference (expected [registry/]repository[:tag][@digest])")
    remainder, _, digest = text.partition("@")
    if digest and not is_digest(digest):
        raise InvalidReference(f"{text!r}: {digest!r} is not a valid digest (sha256: and 64 lower-case hex digits)")
    tag: str | None = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if _TAG_RE.fullmatch(tag) is None:
            raise InvalidReference(
                f"{text!r}: {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)"
            )
    registry, repository = _split_registry(remainder)
    if not repository:
        raise InvalidReference(f"{text!r} names no repository")
    for component in repository.split("/"):
        if _COMPONENT_RE.fullmatch(component) is None:
            hint = " (repository names are lower case)" if component.lower() != component else ""
            raise InvalidReference(f"{text!r}: {component!r} is not a valid repository component{hint}")
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"{_OFFICIAL_NAMESPACE}/{repository}"
    if len(f"{registry}/{repository}") > _MAX_NAME_LENGTH:
        raise InvalidReference(f"{text!r}: the repository name is longer than {_MAX_NAME_LENGTH} characters")
    if tag is None and not digest:
        tag = default_tag
    return Reference(registry, repository, tag, digest or None)
