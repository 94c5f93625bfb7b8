"""Building a new overlay layer in a staging entry, published with one rename."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING

from layerstore.errors import LayerExists
from layerstore.xattrs import get_xattr, list_xattrs

from .links import Links, short_name

if TYPE_CHECKING:
    from layerstore.capabilities import CreateOpts
    from layerstore.idtools import IDMappings
    from layerstore.kit import ScratchArea

__all__ = ["OVERLAY_XATTR_PREFIXES", "build_layer"]

OVERLAY_XATTR_PREFIXES = ("trusted.overlay.",)
"""Where the kernel keeps its marks (opaque directories, origins): never copied to a new layer's root."""


def build_layer(
    links: Links,
    staging: ScratchArea,
    id: str,
    *,
    parent: str | None,
    lowers: list[str],
    opts: CreateOpts,
    id_maps: IDMappings,
) -> None:
    """Build layer `id` (diff/, work/, merged/, its records) in `staging` and rename it into place.

    With a `parent` (whose short-name lock the caller holds shared), the
    child record is written before the layer appears, so a crash never
    leaves a child its parent does not know; the layer's own ``l/`` link is
    made once it exists (`Links.heal` re-creates it after a crash).  Raises
    `LayerExists` when another process published `id` first.
    """
    layout = links.layout
    short = short_name()
    record = ""
    try:
        with staging.reserve(id) as entry:
            diff = os.path.join(entry.path, "diff")
            if parent is None:
                os.mkdir(diff, 0o755)
                os.chown(diff, *id_maps.root_pair)
                os.chmod(diff, 0o755)  # a layer root is 0755 by contract, whatever the umask
            else:
                _copy_root(os.path.join(layout.dir(parent), "diff"), diff)
            os.mkdir(os.path.join(entry.path, "work"), 0o700)
            os.mkdir(os.path.join(entry.path, "merged"), 0o700)
            files = {"link": short, "read-only": "" if opts.read_only else None}
            if parent is not None:
                files.update({"lower": ":".join(lowers), "parent": parent})
                record = links.register_kid(parent, id, lowers[0].rpartition("/")[2])
            for name, text in files.items():
                if text is not None:
                    with open(os.path.join(entry.path, name), "w", encoding="utf-8") as f:
                        f.write(text)
            try:
                entry.publish(layout.dir(id))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise LayerExists(f"layer {id} already exists in driver overlay") from None
                raise
    except BaseException:
        if record and not (layout.exists(id) and layout.parent_of(id) == parent):
            with contextlib.suppress(OSError):
                os.unlink(record)
        raise
    with contextlib.suppress(FileExistsError):
        os.symlink(f"../{id}/diff", layout.link_path(short))


def _copy_root(source: str, dest: str) -> None:
    """Make `dest` a directory with the mode, owner and xattrs of `source` (the parent's root)."""
    st = os.lstat(source)
    os.mkdir(dest, 0o700)
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, st.st_mode & 0o7777)
    for name in list_xattrs(source):
        if name.startswith(OVERLAY_XATTR_PREFIXES) or name.startswith("user.overlay."):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dest, name, get_xattr(source, name), follow_symlinks=False)
