"""Content an extraction removes that the layer's byte-exact export still needs.

A layer tar may write a file and later remove it again (a whiteout of it in
the same tar, or the removal of a link it was written through).  The
extraction then no longer has the file where the tar-split metadata expects
it.  While an import records tar-split metadata it opens a `SetAside`
(`setting_aside`); `apply_tar` copies each such file's content there, keyed by
the member's position in the archive, before removing it, and the importer
moves those contents into the metadata (`layerstore.tarsplit.inline_kept`).
Without an open `SetAside` (a driver used on its own) such entries are
refused with `InvalidArchive`, since nothing could export them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SetAside", "current", "setting_aside"]

_CURRENT: contextvars.ContextVar[SetAside | None] = contextvars.ContextVar("layerstore_set_aside", default=None)


class SetAside:
    """A directory of kept contents: ``kept`` maps a member's position to the file holding its content."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.kept: dict[int, Path] = {}

    def keep(self, index: int, path: str) -> None:
        """Copy the content of the regular file `path` (member number `index`) before it is removed."""
        if index in self.kept:
            return
        self.directory.mkdir(exist_ok=True)
        target = self.directory / str(index)
        import shutil  # rare (a member that replaces an earlier one); shutil costs every import ~2 ms

        shutil.copyfile(path, target, follow_symlinks=False)
        self.kept[index] = target


def current() -> SetAside | None:
    """The `SetAside` open in this context, or None."""
    return _CURRENT.get()


@contextlib.contextmanager
def setting_aside(directory: str | os.PathLike[str]) -> Iterator[SetAside]:
    """Open a `SetAside` in `directory` (created on first use) for extractions in this context."""
    aside = SetAside(directory)
    token = _CURRENT.set(aside)
    try:
        yield aside
    finally:
        _CURRENT.reset(token)
