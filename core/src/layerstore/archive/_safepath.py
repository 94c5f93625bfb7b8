"""Containment: tar member names to paths inside a layer, never through a symbolic link.

`split_name` refuses absolute names and ``..``.  `SafeTree` remembers which
directories below the layer root were verified (by ``lstat``) to be real
directories, so that each parent is checked once; whenever the extraction
removes or replaces a directory it forgets that directory and everything
below it, so a symbolic link planted by an earlier entry is always seen.
"""

from __future__ import annotations

import os
import shutil
import stat

from ..errors import InvalidArchive

__all__ = ["SafeTree", "remove_path", "split_name"]


def split_name(name: str, what: str = "tar entry") -> list[str]:
    """Return the components of a member name (``./a//b/`` -> ``["a", "b"]``; the root is ``[]``).

    Raises `InvalidArchive` naming the entry for an absolute name or a ``..`` component.
    """
    if name.startswith("/"):
        raise InvalidArchive(
            f"unsafe {what} {name!r}: absolute paths are refused; use names relative to the layer root"
        )
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p and p != "."]
    if ".." in parts:
        raise InvalidArchive(f"unsafe {what} {name!r}: '..' components are refused")
    return parts


def remove_path(path: str, is_dir: bool) -> None:
    """Remove a file, link or node, or a whole directory tree without following links."""
    if is_dir:
        shutil.rmtree(path)
    else:
        os.unlink(path)


class SafeTree:
    """The layer root being extracted to, with a cache of verified directories."""

    def __init__(self, root: str, owner: tuple[int, int]) -> None:
        self.root = root.rstrip("/") or "/"
        self._prefix = self.root if self.root != "/" else ""
        self.owner = owner
        self.dirs: set[str] = {""}

    def path(self, rel: str) -> str:
        """The absolute path of a relative one (``""`` is the root)."""
        return f"{self._prefix}/{rel}" if rel else self.root

    def parent(self, parts: list[str], name: str, *, create: bool) -> str | None:
        """Verify (or, with `create`, make) the parent directories of `parts`; return the parent's relative path.

        Missing parents are created 0755 owned by `owner` when `create`, else
        None is returned.  A parent that is a symbolic link or not a directory
        is refused with `InvalidArchive` naming the entry.
        """
        parent = "/".join(parts[:-1])
        if parent in self.dirs:
            return parent
        rel = ""
        for comp in parts[:-1]:
            rel = f"{rel}/{comp}" if rel else comp
            if rel in self.dirs:
                continue
            path = f"{self._prefix}/{rel}"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                os.chown(path, *self.owner, follow_symlinks=False)
                os.chmod(path, 0o755)
                self.dirs.add(rel)
                continue
            if stat.S_ISDIR(mode):
                self.dirs.add(rel)
                continue
            if stat.S_ISLNK(mode):
                raise InvalidArchive(
                    f"unsafe tar entry {name!r}: its parent {rel!r} is a symbolic link; "
                    "nothing is written through links"
                )
            raise InvalidArchive(f"tar entry {name!r}: its parent {rel!r} is not a directory")
        return parent

    def forget(self, rel: str) -> None:
        """Forget the verified directory `rel` and everything below it (it was removed or replaced)."""
        if rel not in self.dirs:
            return
        below = f"{rel}/"
        self.dirs.difference_update([d for d in self.dirs if d == rel or d.startswith(below)])
