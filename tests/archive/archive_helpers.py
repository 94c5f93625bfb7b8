"""Helpers for the archive tests: sample trees, independent snapshots (os.lstat), tar makers."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

NS = 1_000_000_000
T0 = 1_600_000_000 * NS


def _set(path: Path, *, mode: int | None = None, owner: tuple[int, int] = (0, 0), mtime_ns: int = T0) -> None:
    os.chown(path, *owner, follow_symlinks=False)
    if mode is not None:
        os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def build_sample_tree(root: Path, *, devices: bool = True) -> Path:
    """Every file type and attribute a layer tar carries, below `root` (created)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    _set(root / "etc/passwd", mode=0o644, owner=(1000, 1001), mtime_ns=T0 + 123_456_789)
    os.link(root / "etc/passwd", root / "etc/passwd.hl")
    os.setxattr(root / "etc/passwd", "user.comment", b"hello \xff bytes")
    (root / "bin").mkdir()
    (root / "bin/su").write_bytes(b"\x7fELF" + bytes(100))
    _set(root / "bin/su", mode=0o4755)
    (root / "bin/ping").write_bytes(b"ping")
    _set(root / "bin/ping", mode=0o755, owner=(0, 0))
    # security.capability: cap_net_raw+ep (v2 format)
    os.setxattr(root / "bin/ping", "security.capability", bytes.fromhex("0100000200200000000000000000000000000000"))
    (root / "bin/sg").write_bytes(b"sg")
    _set(root / "bin/sg", mode=0o2711, owner=(0, 42))
    (root / "tmp").mkdir()
    _set(root / "tmp", mode=0o1777)
    (root / "srv").mkdir()
    (root / "srv/shared").mkdir()
    _set(root / "srv/shared", mode=0o2775, owner=(33, 33), mtime_ns=T0 + 5)
    os.setxattr(root / "srv/shared", "trusted.note", b"dir-xattr")
    os.symlink("usr/lib", root / "lib")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("../" * 40 + "x" * 60, root / "long-link")
    os.lchown(root / "abs-link", 7, 8)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/empty").write_bytes(b"")
    big = root / "usr/lib/big.bin"
    with big.open("wb") as f:
        block = hashlib.sha256(b"x").digest() * 4096
        for _ in range(24):  # 3 MiB: several copy chunks
            f.write(block)
    deep = root / ("d" * 60) / ("e" * 60) / ("f" * 60)
    deep.mkdir(parents=True)
    (deep / ("g" * 90)).write_text("deep")
    os.mkdir(os.fsencode(root) + b"/caf\xe9")
    with open(os.fsencode(root) + b"/caf\xe9/na\xefve", "wb") as f:
        f.write(b"latin-1 name")
    (root / "run").mkdir()
    os.mkfifo(root / "run/fifo", 0o640)
    if devices:
        (root / "dev").mkdir()
        os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "dev/loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
        _set(root / "dev/loop9", owner=(0, 6))
    # parents' times last, after their contents were made
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir() and not path.is_symlink() and path.name != "shared":
            _set(path, owner=(0, 0), mtime_ns=T0 + len(path.name))
        elif path.is_symlink():
            os.utime(path, ns=(T0, T0), follow_symlinks=False)
    _set(root / "srv/shared", mode=0o2775, owner=(33, 33), mtime_ns=T0 + 5)
    return root


def snapshot(root: Path, *, times: str = "ns", skip_root: bool = False) -> dict[bytes, tuple[object, ...]]:
    """Independent description of a tree: os.lstat fields, contents, targets, xattrs, hardlink groups."""
    result: dict[bytes, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], bytes] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, base)
            if rel == b"." and skip_root:
                continue
            st = os.lstat(path)
            mtime = st.st_mtime_ns if times == "ns" else st.st_mtime_ns // NS
            content: object = None
            link = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    link = inodes[key] = min(inodes.get(key, rel), rel)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
            dir_like = stat.S_ISDIR(st.st_mode)
            result[rel] = (
                stat.filemode(st.st_mode),
                st.st_uid,
                st.st_gid,
                None if dir_like else st.st_size,
                mtime,
                st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
                content,
                link,
                tuple(sorted(xattrs.items())),
            )
    # hardlink groups are named by their smallest path, whatever the walk order
    for rel, value in result.items():
        if value[7] is not None:
            st = os.lstat(os.path.join(base, rel))
            result[rel] = (*value[:7], inodes[(st.st_dev, st.st_ino)], value[8])
    return result


def gnu_tar(src: Path, out: Path, *args: str) -> Path:
    subprocess.run(["tar", "--numeric-owner", *args, "-C", str(src), "-cf", str(out), "."], check=True)
    return out


def bsd_tar(src: Path, out: Path, *args: str) -> Path:
    subprocess.run(["bsdtar", "--numeric-owner", *args, "-C", str(src), "-cf", str(out), "."], check=True)
    return out


class TarBuilder:
    """Build small tars with Python's tarfile (an oracle independent of layerstore)."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(  # noqa: SIM115 - closed by bytes()
            fileobj=self.buffer, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
        )

    def add(self, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = int(attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644))  # type: ignore[call-overload]
        info.mtime = attrs.pop("mtime", 1_600_000_000)  # type: ignore[assignment]
        for key, value in attrs.items():
            setattr(info, key, value)
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))
        else:
            self.tar.addfile(info)
        return self

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.bytes())


def outside_untouched(layer: Path) -> bool:
    outside = layer.parent / "outside"
    return sorted(p.name for p in outside.iterdir()) == ["keep"] and (outside / "keep").read_text() == "sentinel"
