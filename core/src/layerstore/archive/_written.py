"""What one extraction has written so far, and how a later entry takes it away again.

Every tar entry replaces what is at its path, and a whiteout removes what is
at its path.  Before anything goes, content that an earlier entry of the same
archive wrote (at that path, below it, or through a link that goes) is copied
to the open `layerstore.archive.aside.SetAside`, since the byte-exact export
reads it back by member number; without one the entry is refused with
`InvalidArchive`.  Removing a directory or a link also makes everything
cached about it forgotten: the resolved directories of the `SafeTree`,
which directories are known to be plain, and directory times still to be
set.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ..errors import InvalidArchive
from ._membername import split_name
from ._safepath import remove_path
from .aside import current as current_aside

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._safepath import SafeTree

__all__ = ["Written"]


class Written:
    """The record of one extraction into `tree`: what it created, what content it wrote, what is left to finish."""

    def __init__(self, tree: SafeTree) -> None:
        self.tree = tree
        #: Name of the entry being extracted (for messages).
        self.current = ""
        #: Resolved paths of the entries this archive wrote.
        self.created: set[str] = set()
        # Regular files with content written by this archive, and links its entries
        # were resolved through: the export reads them back by member name.
        self.contents: dict[str, tuple[str, int]] = {}
        #: Overlay: lower files copied into the upper directory for a hardlink.
        self.copied_up: set[str] = set()
        #: Directory -> (atime, mtime) in ns, set once the archive is written (its contents change them).
        self.dir_times: dict[str, tuple[int, int]] = {}
        # Directories known (True) to give new files exactly the mode and owner
        # os.open asks for: not setgid, no default ACL.  Cleared when a directory goes.
        self.plain_dirs: dict[str, bool] = {}

    def make_room(self, rel: str, path: str) -> None:
        """Remove whatever is at `path` (an entry replaces it)."""
        self.remove(rel, path, os.lstat(path).st_mode)

    def remove(self, rel: str, path: str, mode: int) -> None:
        """Remove what is at `path` (resolved path `rel`, file type in `mode`), keeping aside what must be kept."""
        is_dir = stat.S_ISDIR(mode)
        self.keep_content(rel, is_dir or stat.S_ISLNK(mode))
        remove_path(path, is_dir)
        if is_dir or stat.S_ISLNK(mode):
            self.forget(rel)

    def create(self, make: Callable[..., None], rel: str, path: str, *args: int) -> None:
        """Call ``make(path, *args)``; if something is in the way, make room and call it again."""
        try:
            make(path, *args)
        except FileExistsError:
            self.make_room(rel, path)
            make(path, *args)

    def keep_content(self, rel: str, tree: bool) -> None:
        """Before `rel` goes: keep aside the content this archive wrote there (or below it, or through it: `tree`).

        Without a `SetAside` open, refuse instead: the export would miss it.
        """
        if not self.contents:
            return
        doomed = [rel] if rel in self.contents else []
        if tree:
            below = f"{rel}/"
            doomed += [r for r in self.contents if r.startswith(below)]
            links = self.tree.traversed
            if any(link == rel or link.startswith(below) for link in links):
                # Names written through the link no longer lead to their files.
                doomed += [r for r, (name, _) in self.contents.items() if split_name(name) != r.split("/")]
        if not doomed:
            return
        aside = current_aside()
        if aside is None:
            name = self.contents[doomed[0]][0]
            raise InvalidArchive(
                f"tar entry {self.current!r} would remove {rel!r}, which holds content of the earlier entry "
                f"{name!r} of the same layer; the layer could not be exported byte for byte, "
                "so it is refused (remove one of the two entries)"
            )
        for doomed_rel in dict.fromkeys(doomed):
            _, index = self.contents.pop(doomed_rel)
            aside.keep(index, self.tree.path(doomed_rel))

    def forget(self, rel: str) -> None:
        """Forget what is cached about the directory or link `rel` and everything below it (it went)."""
        self.plain_dirs.clear()
        self.tree.forget(rel)
        if self.dir_times:
            below = f"{rel}/"
            for key in [k for k in self.dir_times if k == rel or k.startswith(below)]:
                del self.dir_times[key]
