"""Helpers of the image store tests (imported by the tests and by graph_workers)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from layerstore import load_driver
from layerstore.drivers import Driver
from layerstore.errors import DriverNotFound, DriverNotSupported
from layerstore.testing import unavailable


def open_vfs(root: Path) -> Driver:
    """Open the vfs driver for a store at `root` (as the CLI lays it out: <root>/vfs)."""
    try:
        return load_driver("vfs", root / "vfs")
    except (DriverNotFound, DriverNotSupported) as exc:
        unavailable("vfs", str(exc))


def make_tar(members: dict[str, bytes | None], *, fmt: int = tarfile.PAX_FORMAT, trailing: bytes = b"") -> bytes:
    """A tar (in memory, small) of regular files (bytes) and directories (None), in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue() + trailing


def tar_stream(members: dict[str, bytes | None], **kwargs: object) -> io.BytesIO:
    return io.BytesIO(make_tar(members, **kwargs))  # type: ignore[arg-type]
