"""Independent tree oracles of the conformance suite, and layer IDs.

Nothing here trusts a driver: trees are read with ``os.lstat``,
``os.readlink`` and ``os.getxattr``, so a driver cannot pass by agreeing
with itself.  Layer tars are built and read in `._tars`.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import stat
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from layerstore.drivers import Driver

MTIME = 1_600_000_000
"""A fixed, whole-second modification time for tar members (2020-09-13)."""

# Bits chosen so every byte is ASCII: the value survives a PAX header written as UTF-8.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
"""A valid ``security.capability`` value (VFS_CAP_REVISION_2, effective, cap_net_bind_service)."""

# Attributes a driver may add to or hide from a mounted view on its own.
_IGNORED_XATTR_PREFIXES = ("trusted.overlay.", "security.selinux")


def new_id() -> str:
    """A fresh random 64-hex layer ID (never all digits)."""
    return "a" + secrets.token_hex(32)[1:]


def is_root() -> bool:
    """True when the suite runs as root (tests that need it say so with the ``root`` requirement)."""
    return os.geteuid() == 0


class Mode(int):
    """A permission mode that shows itself in octal (``0o4755``) in assertion messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"0o{int(self):o}"

    __str__ = __repr__


@attrs.frozen
class Node:
    """What a user can observe of one path in a tree."""

    kind: str
    mode: int = attrs.field(converter=Mode)
    uid: int
    gid: int
    mtime_ns: int | None
    size: int | None
    digest: str | None
    target: str | None
    rdev: tuple[int, int] | None
    xattrs: tuple[tuple[str, bytes], ...]
    links: tuple[str, ...] = ()


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "sock",
}


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """All extended attributes of `path` (not following symlinks), minus those a driver manages itself."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(
        sorted(
            (name, os.getxattr(path, name, follow_symlinks=False))
            for name in names
            if not name.startswith(_IGNORED_XATTR_PREFIXES)
        )
    )


def snapshot(root: str | os.PathLike[str], *, mtime_precision: int = 1) -> dict[str, Node]:
    """Describe every path under `root` (key ``.`` is the root itself, without its mtime).

    `mtime_precision` in nanoseconds: 1 compares exact times, 10**9 whole
    seconds (for trees that went through a tar).  Directory sizes are
    left out (they depend on the filesystem); hardlinked names list each other.
    """
    root = os.fspath(root)
    nodes: dict[str, Node] = {}
    inodes: dict[tuple[int, int], list[str]] = {}

    def describe(path: str, rel: str) -> Node:
        st = os.lstat(path)
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        digest = file_digest(path) if kind == "file" else None
        target = os.readlink(path) if kind == "symlink" else None
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("chr", "blk") else None
        if kind != "dir" and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        mtime = None if rel == "." else st.st_mtime_ns // mtime_precision
        return Node(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=mtime,
            size=None if kind == "dir" else st.st_size,
            digest=digest,
            target=target,
            rdev=rdev,
            xattrs=read_xattrs(path),
        )

    nodes["."] = describe(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            nodes[rel] = describe(path, rel)
    for names in inodes.values():
        if len(names) > 1:
            group = tuple(sorted(names))
            for name in names:
                nodes[name] = attrs.evolve(nodes[name], links=group)
    return nodes


def describe_difference(expected: dict[str, Node], got: dict[str, Node]) -> str:
    """A short human description of how two snapshots differ (for assertion messages)."""
    lines = []
    for path in sorted(set(expected) | set(got)):
        a, b = expected.get(path), got.get(path)
        if a == b:
            continue
        if a is None:
            lines.append(f"unexpected {path}")
        elif b is None:
            lines.append(f"missing {path}")
        else:
            fields = [
                f"{f.name}: {getattr(a, f.name)!r} != {getattr(b, f.name)!r}"
                for f in attrs.fields(Node)
                if getattr(a, f.name) != getattr(b, f.name)
            ]
            lines.append(f"{path}: {'; '.join(fields)}")
    return "\n".join(lines[:40]) or "no difference"


def set_xattr(path: str, name: str, value: bytes) -> None:
    """Set an xattr on `path` without following symlinks."""
    os.setxattr(path, name, value, follow_symlinks=False)


def populate_every_kind(root: str, *, base_mtime_ns: int = MTIME * 10**9 + 123_456_789) -> None:
    """Fill `root` with every file type and attribute a layer tar carries, with fixed sub-second times.

    Needs root privileges (devices, foreign owners, ``trusted.*`` xattrs).
    """

    def p(rel: str) -> str:
        return os.path.join(root, rel)

    def write(rel: str, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
        with open(p(rel), "wb") as f:
            f.write(data)
        os.chown(p(rel), uid, gid)
        os.chmod(p(rel), mode)

    for rel, mode, uid, gid in (
        ("sub", 0o700, 1000, 1000),
        ("sub/deeper", 0o755, 0, 0),
        ("sub/deeper/deepest", 0o750, 0, 33),
        ("sub/sgid-dir", 0o2775, 0, 50),
        ("sticky", 0o1777, 0, 0),
        ("empty-dir", 0o711, 0, 0),
    ):
        os.mkdir(p(rel))
        os.chown(p(rel), uid, gid)
        os.chmod(p(rel), mode)
    write("plain", b"hello, layer\n", 0o644)
    write("exec", b"#!/bin/sh\necho hi\n", 0o755)
    write("setuid", b"suid\n", 0o4755)
    write("setgid", b"sgid\n", 0o2755, 0, 50)
    write("owned", b"owned\n", 0o640, 1234, 5678)
    write("empty", b"", 0o600)
    write("big", os.urandom(300_000), 0o644)
    write("sticky/tmpfile", b"in sticky\n", 0o666)
    write("sub/deeper/deepest/leaf", b"leaf\n", 0o444, 7, 8)
    write("hard-a", b"one inode, three names\n", 0o640, 42, 43)
    os.link(p("hard-a"), p("hard-b"))
    os.link(p("hard-a"), p("sub/hard-c"))
    os.symlink("plain", p("link-rel"))
    os.symlink("/etc/passwd", p("link-abs"))
    os.symlink("missing/target", p("sub/link-dangling"))
    os.chown(p("sub/link-dangling"), 1234, 5678, follow_symlinks=False)
    os.mknod(p("chr"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(p("blk"), stat.S_IFBLK | 0o660, os.makedev(7, 200))
    os.chown(p("blk"), 0, 6)
    os.mkfifo(p("fifo"), 0o600)
    os.chmod(p("fifo"), 0o620)
    set_xattr(p("plain"), "user.note", b"user attribute")
    set_xattr(p("plain"), "trusted.note", b"trusted attribute")
    set_xattr(p("exec"), "security.capability", CAPABILITY)
    set_xattr(p("sub"), "user.dirnote", b"on a directory")
    set_xattr(p("link-rel"), "trusted.linknote", b"on a symlink")
    set_xattr(p("hard-a"), "user.shared", b"\x00\xffbinary")
    os.chown(root, 0, 0)
    os.chmod(root, 0o750)
    set_xattr(root, "user.rootnote", b"on the root")

    # Times last, deepest first, so that creating entries does not change them again.
    all_paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            all_paths.append(os.path.join(dirpath, name))
    for index, path in enumerate(sorted(all_paths, key=lambda s: (-s.count(os.sep), s))):
        ns = base_mtime_ns + index * 1_000_000_007
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


# -- tars ---------------------------------------------------------------------


def sha256(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def build_layer(
    driver: Driver, parent: str | None = None, tar: bytes | None = None, fill: Callable[[str], None] | None = None
) -> str:
    """Create a new layer on `parent`, apply `tar` to it and/or let `fill` write into its mounted tree."""
    layer = new_id()
    driver.create(layer, parent)
    if tar is not None:
        driver.apply_diff(layer, parent, io.BytesIO(tar))
    if fill is not None:
        with driver.mounted(layer) as path:
            fill(path)
    return layer

