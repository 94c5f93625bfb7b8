"""Extract a layer tar into a layer directory (Docker's applyLayer, made strict).

Every entry replaces what was at its path (a directory over a directory
merges), ownership is mapped to host IDs, modes, times and xattrs are kept,
directory times are restored after their contents, and canonical whiteouts
either delete lower content ("delete" format, full-copy drivers) or become
overlayfs whiteouts ("overlay" format).

Where an entry lands (the rule every driver follows): its own name must be
relative and free of ``..``, else it is refused with `InvalidArchive`.  Its
parent path is resolved inside the layer's full tree (this layer over its
lower layers), following symbolic links with the layer root as ``/``:
absolute targets start again at the layer root and ``..`` never climbs above
it, like ``openat2(RESOLVE_IN_ROOT)`` or a chroot.  The entry is written at
the resolved place and its own last component is never followed (it replaces
what is there).  Hardlink targets, whiteouts and opaque markers resolve the
same way.  Examples, with a lower layer holding ``lib -> usr/lib`` and
``abs -> /opt/real``:

- ``lib/systemd/app.service`` is written to ``usr/lib/systemd/app.service``
  and ``lib`` stays a link (merged /usr);
- ``abs/x`` lands in ``opt/real/x`` of the layer, never in the host's
  ``/opt/real`` (missing directories on the way are created 0755);
- ``lib/.wh.old`` deletes ``usr/lib/old``; ``abs/.wh..wh..opq`` makes
  ``opt/real`` opaque; a hardlink to ``lib/libc.so`` links
  ``usr/lib/libc.so``;
- ``/etc/passwd`` and ``a/../../x`` are refused.

So nothing is ever written, removed, chmod-ed or chown-ed outside the layer,
whatever a link says.  When an entry destroys content an earlier entry of
the same archive wrote (a second member of the same path, a whiteout of it,
or the removal of a link it was written through), that content is copied to
the open `layerstore.archive.aside.SetAside` first (the byte-exact export
needs it); without one the entry is refused with `InvalidArchive`.

This module is the extraction loop: it resolves each entry's place and hands
the entry to its writer (`layerstore.archive._entrywriters`) or, for a
whiteout or opaque marker, to `layerstore.archive._whiteoutapply`; the
record of what was written and the removal rule are
`layerstore.archive._written`, name resolution inside the layer
`layerstore.archive._safepath`.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidArchive, LayerStoreError, StorageFull
from ..idtools import IDMappings
from ._entrywriters import EntryWriters
from ._filepool import THREADS, FilePool, FileWriteFailed, accelerated
from ._membername import split_name
from ._safepath import SafeTree
from ._whiteoutapply import WhiteoutApplier
from ._written import Written
from .tarstream import DIRECTORY, REGULAR, SYMLINK, TarReader
from .whiteouts import WHITEOUT_META_PREFIX, WHITEOUT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["WHITEOUT_FORMATS", "apply_tar"]

WHITEOUT_FORMATS: tuple[str, ...] = ("delete", "overlay")

# Writers that settle the file pool themselves when their entry could meet a pending file.
_POOL_AWARE = frozenset({REGULAR, DIRECTORY, SYMLINK})

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_ARCHIVE_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EINVAL,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.EMLINK,
        errno.ENOTEMPTY,
        errno.EXDEV,
    }
)


def _extract(reader: TarReader, written: Written, writers: EntryWriters, whiteouts: WhiteoutApplier) -> None:
    """Write every entry of `reader` at its resolved place, then finish whiteouts and directory times."""
    tree = written.tree
    handlers = writers.by_kind
    created = written.created
    pool = writers.pool
    take_plain_files = writers.plain_run_taker()
    while True:
        if take_plain_files is not None:
            take_plain_files()
        entry = reader.next()
        if entry is None:
            break
        name = entry.name
        written.current = name
        tree.trim()
        try:
            parts = split_name(name)
            if not parts:
                if entry.kind is not DIRECTORY:
                    raise InvalidArchive(f"tar entry {name!r} names the layer root but is not a directory")
                writers.dir_attributes(entry, "", tree.root)
                continue
            if pool is not None and pool.pending and (entry.kind not in _POOL_AWARE or ".wh." in name):
                pool.settle()  # hardlinks, nodes and whiteouts may look at or remove files still in the pool
            if ".wh." in name:
                if parts[-1].startswith(WHITEOUT_PREFIX):
                    whiteouts.apply(entry, parts)
                    continue
                if any(p.startswith(WHITEOUT_META_PREFIX) for p in parts):
                    continue
            parent = tree.parent(parts, name, create=True)
            rel = f"{parent}/{parts[-1]}" if parent else parts[-1]
            handlers[entry.kind](entry, rel, tree.path(rel))
            created.add(rel)
        except OSError as exc:
            raise _os_error(exc, name) from exc
    try:
        if pool is not None:
            pool.settle()
        whiteouts.finish()
        for rel, times in written.dir_times.items():
            tree.trim()
            os.utime(tree.path(rel), ns=times, follow_symlinks=False)
    except OSError as exc:
        raise _os_error(exc, "") from exc


def _failed_file(failed: FileWriteFailed) -> BaseException:
    """The error of a file the pool could not create, as if it had been written in the loop."""
    if isinstance(failed.error, OSError):
        return _os_error(failed.error, failed.name)
    return failed.error


def _os_error(exc: OSError, name: str) -> LayerStoreError:
    where = exc.filename if exc.filename is not None else name
    if exc.errno in _FULL:
        return StorageFull(
            f"no space left on the layer's storage writing {where!r}: {exc.strerror}; free space or raise the quota"
        )
    what = f"tar entry {name!r}" if name else "layer directory"
    if exc.errno in _ARCHIVE_ERRNOS:
        return InvalidArchive(f"cannot extract {what}: {exc.strerror} ({where})")
    return LayerStoreError(f"cannot extract {what}: {exc.strerror} ({where})")


def apply_tar(
    stream: BinaryIO,
    dest: str | os.PathLike[str],
    *,
    id_maps: IDMappings | None = None,
    whiteout_format: str = "delete",
    overlay_xattr_prefix: str = "trusted.overlay.",
    lowers: Sequence[str] = (),
    file_threads: int | None = None,
) -> int:
    """Extract the uncompressed layer tar `stream` into the existing directory `dest`; return the regular files' size.

    The result is the sum of the sizes of the regular files in the tar
    (hardlinks not counted).
    Ownership is mapped through ``id_maps.to_host``; parents without entries
    are created 0755 owned by ``id_maps.root_pair``.  `whiteout_format`
    "delete" makes canonical whiteouts remove lower content from `dest` (the
    layer's full tree); "overlay" turns them into overlayfs whiteouts (0/0
    character devices, ``<overlay_xattr_prefix>opaque`` = ``y``) in `dest`,
    the upper directory over the read-only directories `lowers` (top first):
    names then resolve through the merged view, upper directories needed
    below a lower directory are created with its owner, mode and xattrs,
    a hardlink to a lower file copies it up first, and an opaque root
    becomes whiteouts of every lower top-level entry.  Names resolve as the
    module docstring says (symbolic links followed inside the layer, never
    out of it).  The stream is read to its end.  Unsafe, corrupt or
    truncated input raises `InvalidArchive` naming the entry; a full disk
    `StorageFull`.  Into an empty `dest` without `lowers` (a new base
    layer), small regular files are created by `file_threads` helper threads
    while the archive is read on (0: none; None: two when the native module
    of ``layerstore-accel`` is installed and `dest` is not on FUSE, else
    none; see `layerstore.archive._filepool`); the layer is the same either
    way.
    Python's cyclic garbage collector is paused while it runs (and resumed
    if it was on): the extraction makes no reference cycles.
    """
    if whiteout_format not in WHITEOUT_FORMATS:
        raise ValueError(f"whiteout_format must be one of {', '.join(WHITEOUT_FORMATS)}, not {whiteout_format!r}")
    root = os.fspath(dest)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise LayerStoreError(f"cannot extract into {root}: not a directory")
    except FileNotFoundError:
        raise LayerStoreError(f"cannot extract into {root}: it does not exist") from None
    maps = id_maps if id_maps is not None else IDMappings()
    reader = TarReader(stream)
    overlay = whiteout_format == "overlay"
    tree = SafeTree(root, maps.root_pair, lowers, f"{overlay_xattr_prefix}opaque" if overlay else "")
    # The extraction makes no reference cycles, but tens of thousands of pending files and
    # their tuples would each be walked by the cyclic collector, several times over (3 % of
    # a 50,000-file import); it is paused for the extraction and resumed as it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        written = Written(tree)
        writers = EntryWriters(reader, written, maps, overlay_xattr_prefix, overlay)
        whiteouts = WhiteoutApplier(written, writers.owner, overlay_xattr_prefix, overlay)
        # A new layer (nothing below it, nothing in it yet) gets its small files from threads:
        # then only this archive's entries can be in their way, and the pool's rules keep their order.
        if file_threads is None:
            file_threads = THREADS if accelerated() and not _on_fuse(root) else 0
        if file_threads > 0 and not lowers and _is_empty(root):
            with FilePool(file_threads) as pool:
                writers.pool = tree.pool = pool
                try:
                    _extract(reader, written, writers, whiteouts)
                except FileWriteFailed as failed:  # from any `add` or `settle`
                    raise _failed_file(failed) from failed.error
        else:
            _extract(reader, written, writers, whiteouts)
        return writers.total
    finally:
        if collecting:
            gc.enable()
        tree.close()


def _on_fuse(directory: str) -> bool:
    # zfs-fuse creates files faster from two threads (0.76x against 0.87x GNU tar's time for 50,000
    # files), but SIGKILLing an extraction with creations in flight from both deadlocked the daemon
    # (every request of every process blocked; seen in the conformance suite's killed apply_diff).
    from ..mountinfo import backing_filesystem

    return backing_filesystem(directory).startswith("fuse")


def _is_empty(directory: str) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is None
