"""Writing a file the user named (``export -o FILE``, ``save -o FILE``) the way ``tar -f`` and ``docker save -o`` do.

- A regular file (or a name that does not exist yet) is replaced atomically:
  the data goes to a temporary file beside it, which is renamed over the
  target only when complete.  Readers see the old file or the whole new one.
- Anything else that exists -- a character or block device (``/dev/null``),
  a FIFO, a ``/proc/self/fd/N`` or ``/dev/fd/N`` name -- is opened and written
  in place, never replaced.  A socket is refused.
- A symlink is written through: its final target is what gets replaced (or
  written), the link stays.
- A directory output (``save --format oci-dir``) is filled as a temporary
  directory beside it and renamed into place when complete (`open_output_dir`).

Temporary files (and directories) are named ``.<name>.layerstore-<random>.tmp`` and removed on
any error, ``KeyboardInterrupt`` or (through the command line's handlers)
SIGTERM/SIGHUP.  Against SIGKILL, each one is first recorded in a journal
entry in the store (``output-<owner>-<random>``, holding the path); a store
that finds the entry's owner dead deletes the temporary file and the entry
(`sweep_journal_entry`, run by every start-up sweep and by ``gc``).  The
owner is in the entry's name, not only in its content: a sweep running
while the entry is being written must not take the half-written entry for a
dead process's and remove it (the temporary file made next would then
survive a SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LayerStoreError
from .kit.atomic import fsync_dir
from .owner import current_owner, owner_alive

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["JOURNAL_PREFIX", "TEMP_MARK", "open_output", "open_output_dir", "sweep_journal_entry"]

JOURNAL_PREFIX = "output-"
TEMP_MARK = ".layerstore-"
_IN_PLACE_ROOTS = ("/proc/", "/dev/fd/")


def _is_temp_name(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith(".") and TEMP_MARK in name and name.endswith(".tmp")


def _in_place(path: str) -> bool:
    """True for names that must be written in place: existing non-regular files and descriptor aliases."""
    absolute = os.path.abspath(path)
    if absolute.startswith(_IN_PLACE_ROOTS) or absolute in ("/dev/stdout", "/dev/stderr"):
        return True
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISSOCK(st.st_mode):
        raise LayerStoreError(f"cannot write to {path}: it is a socket; name a file, a device or a FIFO")
    if stat.S_ISDIR(st.st_mode):
        raise LayerStoreError(f"cannot write to {path}: it is a directory; name a file inside it")
    return not stat.S_ISREG(st.st_mode)


@contextlib.contextmanager
def _journaled(tmp: str, journal: Path | None) -> Iterator[None]:
    """Record temporary output `tmp` in `journal` (when given) for as long as the block runs.

    The entry names its owner, so that a sweep removes `tmp` once this process
    is gone (SIGKILL) and never while it lives.  A full or read-only store
    only loses that protection: the output is still written.
    """
    entry = None
    if journal is not None:
        owner = current_owner()
        entry = journal / f"{JOURNAL_PREFIX}{owner}-{os.urandom(8).hex()}"
        try:
            entry.write_text(f"{owner}\n{tmp}\n", encoding="utf-8", errors="surrogateescape")
        except OSError:  # a full or read-only store must not stop an export elsewhere
            with contextlib.suppress(OSError):
                entry.unlink()
            entry = None
    try:
        yield
    finally:
        if entry is not None:
            with contextlib.suppress(OSError):
                entry.unlink()


def _temp_beside(final: str) -> str:
    directory, name = os.path.split(final)
    return os.path.join(directory, f".{name[:200]}{TEMP_MARK}{os.urandom(6).hex()}.tmp")


@contextlib.contextmanager
def open_output(path: str | os.PathLike[str], journal: Path | None = None) -> Iterator[int]:
    """Yield a descriptor to write the content of the user-named file `path`; commit it on normal exit.

    See the module docstring for what happens to regular files, devices,
    FIFOs and symlinks.  `journal` is a directory of the store where the
    temporary file is recorded so that a store sweep can remove it after a
    SIGKILL; without it only errors and signals clean up.  On an exception
    the temporary file is removed and the target left as it was (a device or
    FIFO has received what was written so far).
    """
    target = os.fspath(path)
    if _in_place(target):
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
            yield fd
        finally:
            os.close(fd)
        return
    final = os.path.realpath(target)  # through symlinks, also dangling ones
    tmp = _temp_beside(final)
    with _journaled(tmp, journal):
        try:
            old = os.stat(final)
        except FileNotFoundError:
            old = None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            if old is not None:  # the replacement keeps the file's mode and, where allowed, owner
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, old.st_uid, old.st_gid)
            yield fd
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def open_output_dir(path: str | os.PathLike[str], journal: Path | None = None) -> Iterator[Path]:
    """Yield a new temporary directory to fill; on normal exit it becomes the user-named directory `path`.

    `path` must not exist or be an empty directory (`LayerStoreError`
    otherwise); a symlink is followed to its target.  The temporary
    directory (``.NAME.layerstore-<random>.tmp`` beside the target) is
    recorded in `journal` as `open_output` records a file, removed with all
    it holds on any exception, and renamed over the target in one step.  The
    caller makes its files durable; this makes the directory and its name
    durable before and after the rename.
    """
    final = os.path.realpath(os.fspath(path))
    if os.path.lexists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise LayerStoreError(f"{path} exists and is not an empty directory; choose a new output directory")
    tmp = _temp_beside(final)
    with _journaled(tmp, journal):
        os.mkdir(tmp, 0o777)
        try:
            yield Path(tmp)
            fsync_dir(tmp)
            os.rename(tmp, final)  # replaces an empty directory
            fsync_dir(os.path.dirname(final))
        except BaseException:
            from .fstree import remove_tree  # here: only a failed directory output removes a tree

            with contextlib.suppress(OSError):
                remove_tree(tmp)
            raise


def sweep_journal_entry(entry: Path) -> bool:
    """Remove the temporary file a dead process recorded in journal `entry`, and the entry.

    Returns False (and touches nothing) while the owner lives.  Only a file
    whose name has the temporary-file pattern is ever deleted.  The owner is
    read from the entry's name (``output-<pid>-<start>-<random>``), which
    exists whole from the start; entries named ``output-<random>`` (older
    versions) carry it in their first line.
    """
    owner = _owner_in_name(entry.name)
    if owner is not None and owner_alive(owner):
        return False
    try:
        text = entry.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return True
    first, _, rest = text.partition("\n")
    if owner is None and owner_alive(first):
        return False
    tmp = rest.rstrip("\n")
    if tmp and _is_temp_name(tmp):
        if os.path.isdir(tmp) and not os.path.islink(tmp):  # a directory output (``save --format oci-dir``)
            from .fstree import remove_tree

            remove_tree(tmp)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()
    return True


def _owner_in_name(name: str) -> str | None:
    """The owner tag ``<pid>-<start>`` in a journal entry's name, or None for the older ``output-<random>``."""
    pid, _, rest = name.removeprefix(JOURNAL_PREFIX).partition("-")
    start, _, _ = rest.partition("-")
    return f"{pid}-{start}" if pid.isdigit() and start.isdigit() else None
