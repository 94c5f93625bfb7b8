"""The state of one ``layerstore`` command: the settings the group options chose and the store they open.

Also the record and ID helpers every command module shares.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from .errors import ImageNotFound

if TYPE_CHECKING:
    from .config import Settings
    from .drivers import Driver
    from .graph import Graph
    from .image import Image

__all__ = [
    "CommandState",
    "command_state",
    "created_text",
    "digest_or_none",
    "error_line",
    "image_record",
    "short_id",
]


class CommandState:
    """What the group options chose; opens the store on first use and closes it when the command ends."""

    def __init__(self, root: Path | None, driver: str | None, options: Sequence[str], config: Path | None) -> None:
        self._root = root
        self._driver_name = driver
        self._options = options
        self._config = config
        self._settings: Settings | None = None
        self._store: tuple[Driver, Graph] | None = None
        self.keep_mounts = False

    @property
    def resolved_root(self) -> Path | None:
        """The store root, once the settings were resolved (for error messages); None before."""
        return self._settings.root if self._settings is not None else None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from .config import resolve_settings

            self._settings = resolve_settings(
                root=self._root, driver=self._driver_name, options=self._options, config=self._config
            )
        return self._settings

    def store(self) -> tuple[Driver, Graph]:
        if self._store is None:
            from .config import open_store

            self._store = open_store(self.settings)
        return self._store

    @property
    def store_exists(self) -> bool:
        """Whether the store root holds a store (read-only commands create none)."""
        from .graph import GRAPH_DIR

        return (self.settings.root / GRAPH_DIR).is_dir()

    def existing_graph(self) -> Graph | None:
        """The store's graph, or None when there is no store yet: for commands that only read."""
        if self.store_exists:
            return self.graph
        self.check_driver_name()
        return None

    def check_driver_name(self) -> None:
        """Fail as opening the store would for a driver that is not installed or a misnamed option scope."""
        from .discovery import installed_driver_names, no_such_driver

        installed = installed_driver_names()
        self.settings.check_driver_names(installed)
        if self.settings.driver is not None and self.settings.driver not in installed:
            raise no_such_driver(self.settings.driver)

    def graph_for(self, image: str) -> Graph:
        """The store's graph for a command about `image`; `ImageNotFound` when there is no store yet."""
        if not self.store_exists:
            from .truncindex import TruncIndex

            self.check_driver_name()
            with contextlib.suppress(ImageNotFound):
                TruncIndex().get(image)  # an invalid name is refused as in a store
            raise ImageNotFound(f"no image with ID {image}: there is no store at {self.settings.root} yet")
        return self.graph

    @property
    def graph(self) -> Graph:
        return self.store()[1]

    @property
    def driver(self) -> Driver:
        return self.store()[0]

    def close(self) -> None:
        if self._store is not None and not self.keep_mounts:
            driver = self._store[0]
            self._store = None
            driver.cleanup()


def command_state() -> CommandState:
    """The state of the running command (from the click context)."""
    return cast(CommandState, click.get_current_context().find_object(CommandState))


def short_id(image_id: str | None, full: bool = False) -> str:
    if not image_id:
        return ""
    return image_id if full else image_id[:12]


def created_text(image: Image) -> str:
    try:
        return image.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return image.created


def image_record(image: Image, digest: str | None) -> dict[str, Any]:
    """An image in the shared JSON schema (``ls --json``, ``inspect``, ``import --json``)."""
    return {
        "id": image.id,
        "parent": image.parent,
        "created": image.created,
        "comment": image.comment or None,
        "author": image.author or None,
        "size": image.size,
        "digest": digest,
        "container": image.container or None,
        "architecture": image.architecture or None,
        "os": image.os or None,
        "config": image.config,
        "container_config": image.container_config,
    }


def digest_or_none(graph: Graph, image_id: str) -> str | None:
    from .graph import DigestNotSet

    try:
        return graph.get_digest(image_id)
    except DigestNotSet:
        return None


def error_line(message: str) -> None:
    """Print `message` as the one ``layerstore: error: ...`` line on stderr (whitespace folded)."""
    text = " ".join(str(message).split()) or "unknown error"
    try:
        sys.stderr.write(f"layerstore: error: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
