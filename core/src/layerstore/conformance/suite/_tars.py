"""Layer tars of the conformance suite: built and read with the stdlib `tarfile` only.

A driver's ``apply_diff`` is fed what `TarBuilder` writes and its ``diff`` is
read back with `read_tar`, so a driver cannot pass by agreeing with itself.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

import attrs

from ._support import MTIME, Mode

if TYPE_CHECKING:
    from layerstore.drivers import Driver


class TarBuilder:
    """Writes a layer tar with `tarfile` (PAX format), member by member."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by bytes()
        self.regular_bytes = 0
        """The sum of the sizes of the regular files added (what `apply_diff` must return)."""

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None, xattrs: dict[str, bytes] | None = None) -> None:
        info.mtime = info.mtime or MTIME
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
        if data is not None:
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        else:
            self._tar.addfile(info)

    def file(
        self,
        name: str,
        data: bytes = b"",
        *,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int = MTIME,
        xattrs: dict[str, bytes] | None = None,
    ) -> TarBuilder:
        """Add a regular file."""
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
        self.regular_bytes += len(data)
        self._add(info, data, xattrs)
        return self

    def dir(
        self,
        name: str,
        *,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        mtime: int = MTIME,
        xattrs: dict[str, bytes] | None = None,
    ) -> TarBuilder:
        """Add a directory."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
        self._add(info, None, xattrs)
        return self

    def symlink(self, name: str, target: str, *, uid: int = 0, gid: int = 0) -> TarBuilder:
        """Add a symbolic link."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname, info.mode, info.uid, info.gid = target, 0o777, uid, gid
        self._add(info)
        return self

    def hardlink(self, name: str, target: str) -> TarBuilder:
        """Add a hard link to the earlier member `target`."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        self._add(info)
        return self

    def device(self, name: str, kind: str, major: int, minor: int, *, mode: int = 0o600) -> TarBuilder:
        """Add a character (``chr``) or block (``blk``) device."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
        info.devmajor, info.devminor, info.mode = major, minor, mode
        self._add(info)
        return self

    def fifo(self, name: str, *, mode: int = 0o600) -> TarBuilder:
        """Add a fifo."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.FIFOTYPE
        info.mode = mode
        self._add(info)
        return self

    def whiteout(self, name: str) -> TarBuilder:
        """Add the canonical whiteout of `name` (``dir/.wh.base``)."""
        head, _, base = name.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600)

    def opaque(self, directory: str) -> TarBuilder:
        """Mark `directory` opaque (``dir/.wh..wh..opq``)."""
        return self.file(f"{directory}/.wh..wh..opq", mode=0o600)

    def bytes(self) -> bytes:
        """Close the archive and return it."""
        self._tar.close()
        return self._buf.getvalue()


@attrs.frozen
class Member:
    """One member of a tar read back with `tarfile`."""

    name: str
    kind: str
    mode: int = attrs.field(converter=Mode)
    uid: int
    gid: int
    mtime: int
    size: int
    digest: str | None
    linkname: str
    rdev: tuple[int, int] | None
    xattrs: dict[str, bytes]


_TAR_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "chr",
    tarfile.BLKTYPE: "blk",
    tarfile.FIFOTYPE: "fifo",
}


def read_tar(stream: IO[bytes]) -> list[Member]:
    """Read an uncompressed tar stream to its end with `tarfile`, in order."""
    members = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            digest = None
            if info.isreg():
                f = tar.extractfile(info)
                h = hashlib.sha256()
                if f is not None:
                    for chunk in iter(lambda: f.read(1 << 16), b""):  # noqa: B023 - consumed immediately
                        h.update(chunk)
                digest = h.hexdigest()
            xattrs = {
                k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
                for k, v in info.pax_headers.items()
                if k.startswith("SCHILY.xattr.")
            }
            members.append(
                Member(
                    name=info.name,
                    kind=_TAR_KINDS.get(info.type, f"type {info.type!r}"),
                    mode=info.mode & 0o7777,
                    uid=info.uid,
                    gid=info.gid,
                    mtime=int(info.mtime),
                    size=info.size,
                    digest=digest,
                    linkname=info.linkname,
                    rdev=(info.devmajor, info.devminor) if info.ischr() or info.isblk() else None,
                    xattrs=xattrs,
                )
            )
    return members


def diff_members(driver: Driver, layer: str, parent: str | None) -> list[Member]:
    """The members of ``driver.diff(layer, parent)``, read with `tarfile`; the stream is closed."""
    with driver.diff(layer, parent) as stream:
        return read_tar(stream)


def names(members: Iterable[Member]) -> list[str]:
    """The member names of a tar, in order."""
    return [m.name for m in members]


def hidden_by_diff(members: Iterable[Member], directory: str, lower_entries: Iterable[str]) -> list[str]:
    """The `lower_entries` of `directory` that a diff does NOT hide.

    A diff hides a lower entry with an opaque marker in the directory or with
    a whiteout of the entry itself (exporters of full-copy drivers write the
    latter); both mean the same.
    """
    found = {m.name for m in members}
    if f"{directory}/.wh..wh..opq" in found:
        return []
    return [e for e in lower_entries if f"{directory}/.wh.{e}" not in found]
