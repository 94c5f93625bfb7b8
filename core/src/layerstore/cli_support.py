"""Output conventions shared by every ``layerstore`` command (also commands added by other modules).

- Results go to standard output; progress bars, summaries and errors go to
  standard error, and a progress bar is never drawn while results are
  printed.
- ``--json`` (`json_option`) prints one JSON document (`emit_json`): keys
  are lower-case snake_case, an absent value is ``null`` (never a missing
  key), sizes are integers in bytes, digests are ``"sha256:<hex>"``.
  Objects that hold user data as stored (an image's ``config``) are passed
  through unchanged.
- ``-q``/``--quiet`` (`quiet_option`) prints only IDs, one per line, and no
  summary (`emit_ids`, `summary`).
- Exit status: 0 success, 1 an error (one line on stderr), 2 a usage error,
  1 also for ``exists`` when the image is absent, 130 interrupted, 141 the
  reader of standard output went away (silently), 70 an internal error.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "FREE_FORM_KEYS",
    "Stopwatch",
    "emit_ids",
    "emit_json",
    "interactive",
    "json_option",
    "progress",
    "quiet_option",
    "summary",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

FREE_FORM_KEYS: frozenset[str] = frozenset({"config", "container_config", "labels", "annotations", "extra"})
"""Keys whose values are user data passed through as stored: the snake_case rule does not apply inside them."""

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json`` (parameter ``as_json``): print one JSON document in the shared schema instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (snake_case keys, null when absent, "
                        "sizes in bytes, sha256: digests).")(func)


def quiet_option(func: F) -> F:
    """Add ``-q``/``--quiet`` (parameter ``quiet``): print only IDs, one per line, and no summary."""
    return click.option("-q", "--quiet", is_flag=True, help="Print only IDs, one per line; no summary.")(func)


def emit_json(data: object) -> None:
    """Print `data` as one indented JSON document on standard output."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def emit_ids(ids: Iterable[str]) -> None:
    """Print each ID on its own line on standard output."""
    for image_id in ids:
        click.echo(image_id)


def summary(text: str, *, quiet: bool = False) -> None:
    """Print a one-line summary of what a command did on standard error (not with `quiet`)."""
    if not quiet:
        click.echo(f"layerstore: {text}", err=True)


def interactive() -> bool:
    """True when standard error is a terminal (progress bars are drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(length: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error when it is a terminal; a no-op callback otherwise.

    Print results only after the block ends (collect them inside it): the
    bar owns its terminal line until then, so results never share it.
    """
    if not interactive() or not length:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update


class Stopwatch:
    """Elapsed wall time for summaries: ``f"{watch}"`` is like ``0.42 s``."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def seconds(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.monotonic() - self._start

    def __str__(self) -> str:
        return f"{self.seconds:.2f} s"
