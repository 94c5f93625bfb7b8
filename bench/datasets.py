"""Benchmark datasets: layer tars built once and cached under bench/data/.

Datasets (``--quick`` builds smaller variants of the generated ones, cached
separately):

- ``rootfs``: a Debian bookworm minbase root filesystem made by debootstrap
  (inside a loop-mounted ext4, because file creation on the root filesystem
  is slow), tarred by GNU tar with ``--numeric-owner --xattrs``.  Without
  network it falls back to ``genroot``'s generator and says so (`Dataset.note`).
- ``rootfs-gz``: the same tar, gzip-compressed.
- ``genroot``: a generated rootfs-like tree (thousands of files of
  log-normal sizes, nested directories, symlinks, hardlinks, a setuid file).
- ``small``: 50,000 files of 1 KiB.
- ``big``: 4 files of 256 MiB of random bytes.
- ``whiteout``: a child layer with file whiteouts and an opaque directory,
  on top of a small parent layer (`Dataset.parent`).
- ``layer1g``: a generated 1 GiB layer (large and mid-size files) for the
  memory measurements.

Generated tars are written by the stdlib ``tarfile`` in GNU format, streaming
random content (nothing is held in memory).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
_CHUNK = 1 << 20

ALL_DATASETS = ("rootfs", "rootfs-gz", "genroot", "small", "big", "whiteout", "layer1g")


@dataclass
class Dataset:
    """One cached layer tar and what is known about it."""

    name: str
    path: Path
    sha256: str  # of the uncompressed tar: what an export must reproduce
    size: int  # bytes of the file at `path`
    members: int
    compressed: bool = False
    parent: Dataset | None = None  # imported first (unmeasured) when set
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the report."""
        kind = "gzip" if self.compressed else "tar"
        text = f"{self.name}: {self.path.name} {self.size / 1e6:.1f} MB {kind}, {self.members} members"
        if self.parent is not None:
            text += f", parent {self.parent.path.name}"
        if self.note:
            text += f" [{self.note}]"
        return text


class _RandomReader:
    """A file-like object returning `size` random bytes (no buffering of the whole file)."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        self._left -= n
        return os.urandom(n)


def _log(message: str) -> None:
    print(f"[datasets] {message}", file=sys.stderr, flush=True)


def _sha256_file(path: Path, opener: Callable[[Path], object] | None = None) -> str:
    h = hashlib.sha256()
    f = gzip.open(path, "rb") if opener is not None else open(path, "rb")  # noqa: SIM115
    with f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _count_members(path: Path) -> int:
    with tarfile.open(path, "r:*") as tf:
        return sum(1 for _ in tf)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[Path]:
    """Write to a temporary sibling of `path`, renamed into place only on success."""
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _gnu_tar_writer(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, "w", format=tarfile.GNU_FORMAT)


def _dir(tf: tarfile.TarFile, name: str, mode: int = 0o755, mtime: int = 1_700_000_000) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = mtime
    tf.addfile(info)


def _file(tf: tarfile.TarFile, name: str, size: int, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_700_000_000
    tf.addfile(info, _RandomReader(size))


def _link(tf: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    info.mtime = 1_700_000_000
    tf.addfile(info)


def _gen_rootlike(path: Path, files: int, total_bytes: int, seed: int = 42) -> None:
    """A rootfs-like tree: /usr/lib/... deep directories, log-normal sizes, symlinks, hardlinks."""
    rng = random.Random(seed)
    # Log-normal sizes rescaled to the wanted total (many small files, a few large ones).
    raw = [rng.lognormvariate(8.0, 1.8) for _ in range(files)]
    scale = total_bytes / sum(raw)
    sizes = [max(0, int(x * scale)) for x in raw]
    tops = ["bin", "etc", "lib", "sbin", "usr/bin", "usr/lib", "usr/share/doc", "usr/share/locale", "var/lib"]
    dirs: list[str] = []
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        seen: set[str] = set()
        for top in tops:
            parts = top.split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    _dir(tf, d)
            for j in range(max(1, files // 150 // len(tops))):
                d = f"{top}/pkg{j:03d}"
                _dir(tf, d)
                dirs.append(d)
                if j % 3 == 0:
                    sub = f"{d}/sub"
                    _dir(tf, sub)
                    dirs.append(sub)
        regular: list[str] = []
        for i, size in enumerate(sizes):
            d = dirs[rng.randrange(len(dirs))]
            name = f"{d}/f{i:06d}{rng.choice(['.so', '.py', '.txt', '', '.gz', '.mo'])}"
            mode = 0o755 if d.endswith("bin") or "/bin/" in d else 0o644
            _file(tf, name, size, mode=mode, uid=rng.choice([0, 0, 0, 100]), gid=0)
            regular.append(name)
            if i % 40 == 0:
                _link(tf, f"{name}.sym", "../" + name.rsplit("/", 1)[-1], tarfile.SYMTYPE)
            if i % 97 == 0:
                _link(tf, f"{name}.hard", name, tarfile.LNKTYPE)
        _file(tf, "usr/bin/suid-helper", 4096, mode=0o4755)


def _gen_many(path: Path, count: int, size: int, per_dir: int) -> None:
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        for i in range(count):
            if i % per_dir == 0:
                _dir(tf, f"d{i // per_dir:04d}")
            _file(tf, f"d{i // per_dir:04d}/f{i:06d}", size)


def _gen_big(path: Path, count: int, size: int) -> None:
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        _dir(tf, "data")
        for i in range(count):
            _file(tf, f"data/blob{i}", size)


def _gen_layer(path: Path, total: int) -> None:
    """Half the bytes in 8 large files, half in 128 KiB files."""
    big = total // 2 // 8
    small = 128 * 1024
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        _dir(tf, "large")
        for i in range(8):
            _file(tf, f"large/l{i}", big)
        n = (total - 8 * big) // small
        for i in range(n):
            if i % 256 == 0:
                _dir(tf, f"mid{i // 256:03d}")
            _file(tf, f"mid{i // 256:03d}/m{i:05d}", small)


def _gen_whiteout_parent(path: Path) -> None:
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        for d in ("etc", "opaque", "opaque/deep", "keep", "gone"):
            _dir(tf, d)
        for i in range(100):
            _file(tf, f"keep/k{i:03d}", 2048)
            _file(tf, f"gone/g{i:03d}", 2048)
            _file(tf, f"opaque/o{i:03d}", 2048)
            _file(tf, f"opaque/deep/x{i:03d}", 1024)
        for i in range(20):
            _file(tf, f"etc/conf{i:02d}", 512)


def _gen_whiteout_child(path: Path) -> None:
    with _writing(path) as tmp, _gnu_tar_writer(tmp) as tf:
        _dir(tf, "etc")
        for i in range(0, 20, 2):  # delete every other config file
            _file(tf, f"etc/.wh.conf{i:02d}", 0)
        _file(tf, ".wh.gone", 0)  # delete a whole directory
        _dir(tf, "keep")
        for i in range(0, 100, 3):
            _file(tf, f"keep/.wh.k{i:03d}", 0)
        for i in range(50):
            _file(tf, f"keep/new{i:03d}", 4096)
        _dir(tf, "opaque")
        _file(tf, "opaque/.wh..wh..opq", 0)  # hide everything the parent had there
        for i in range(30):
            _file(tf, f"opaque/fresh{i:03d}", 1024)


def _debootstrap(out: Path, workdir: Path) -> str:
    """Build rootfs.tar with debootstrap in a loop-mounted ext4; return "" or why it fell back."""
    from layerstore.testing.loop import loop_filesystem

    if shutil.which("debootstrap") is None:
        return "debootstrap not installed"
    log = workdir / "debootstrap.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with loop_filesystem(workdir, "ext4", 4096) as mnt:
        target = mnt / "rootfs"
        _log(f"debootstrap --variant=minbase bookworm (log: {log}) ...")
        started = time.monotonic()
        with open(log, "wb") as logf:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(target), DEBIAN_MIRROR],
                stdout=logf,
                stderr=subprocess.STDOUT,
                check=False,
            )
        # debootstrap mounts /proc and /sys in the target; make sure none stays.
        for sub in ("proc", "sys", "dev/pts", "dev"):
            if os.path.ismount(target / sub):
                subprocess.run(["umount", "--lazy", str(target / sub)], check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            return f"debootstrap failed (exit {proc.returncode}: {tail[0]})"
        _log(f"debootstrap done in {time.monotonic() - started:.0f} s; tarring")
        # Layer tars name members relative to the root, without "./" and without an entry for the root.
        entries = sorted(os.listdir(target))
        with _writing(out) as tmp:
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name",
                 "-C", str(target), "-cf", str(tmp), *entries],
                check=True,
            )
    return ""


def _cached(path: Path, build: Callable[[Path], str | None], compressed: bool = False) -> tuple[str, int, str]:
    """Build `path` once; return (sha256 of uncompressed content, members, note), cached in a .json beside it."""
    meta_path = path.with_name(path.name + ".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return meta["sha256"], meta["members"], meta.get("note", "")
    _log(f"building {path.name} ...")
    started = time.monotonic()
    note = build(path) or ""
    sha = _sha256_file(path, opener=gzip.open if compressed else None)
    members = _count_members(path)
    meta_path.write_text(json.dumps({"sha256": sha, "members": members, "note": note}))
    _log(f"built {path.name}: {path.stat().st_size / 1e6:.1f} MB, {members} members in "
         f"{time.monotonic() - started:.0f} s")
    return sha, members, note


def _make(
    name: str,
    path: Path,
    build: Callable[[Path], str | None],
    *,
    compressed: bool = False,
    parent: Dataset | None = None,
    note: str = "",
    extra: dict[str, object] | None = None,
) -> Dataset:
    sha, members, built_note = _cached(path, build, compressed)
    return Dataset(
        name, path, sha, path.stat().st_size, members,
        compressed=compressed, parent=parent, note=note or built_note, extra=dict(extra or {}),
    )


def build_datasets(names: list[str], quick: bool, data_dir: Path = DATA_DIR) -> list[Dataset]:
    """Build (or load from the cache) the datasets `names`, in that order."""
    data_dir.mkdir(parents=True, exist_ok=True)
    q = "-quick" if quick else ""
    result: list[Dataset] = []
    rootfs: Dataset | None = None

    def get_rootfs() -> Dataset:
        nonlocal rootfs
        if rootfs is None:
            def build(out: Path) -> str:
                why = _debootstrap(out, data_dir / "build")
                if why:
                    _log(f"FALLBACK: {why}; generating a rootfs-like tree instead")
                    _gen_rootlike(out, 12_000, 200 * 1024 * 1024, seed=7)
                    return f"generated fallback, debootstrap unavailable: {why}"
                return ""
            rootfs = _make("rootfs", data_dir / "rootfs.tar", build)
        return rootfs

    for name in names:
        if name == "rootfs":
            result.append(get_rootfs())
        elif name == "rootfs-gz":
            src = get_rootfs()

            def gz(out: Path, src: Path = src.path) -> None:
                with _writing(out) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
                    subprocess.run(["gzip", "-6", "-n", "-c"], stdin=fin, stdout=fout, check=True)

            result.append(
                _make("rootfs-gz", data_dir / "rootfs.tar.gz", gz, compressed=True, note=src.note,
                      extra={"plain": str(src.path)})
            )
        elif name == "genroot":
            files, total = (2000, 30 << 20) if quick else (8000, 300 << 20)
            result.append(
                _make("genroot", data_dir / f"genroot{q}.tar",
                      functools.partial(_gen_rootlike, files=files, total_bytes=total))
            )
        elif name == "small":
            count = 5000 if quick else 50_000
            build = functools.partial(_gen_many, count=count, size=1024, per_dir=500)
            result.append(_make("small", data_dir / f"small{q}.tar", build))
        elif name == "big":
            size = (16 << 20) if quick else (256 << 20)
            result.append(_make("big", data_dir / f"big{q}.tar", functools.partial(_gen_big, count=4, size=size)))
        elif name == "whiteout":
            parent = _make("whiteout-parent", data_dir / "whiteout-parent.tar", _gen_whiteout_parent)
            result.append(_make("whiteout", data_dir / "whiteout-child.tar", _gen_whiteout_child, parent=parent))
        elif name == "layer1g":
            total = (64 << 20) if quick else (1 << 30)
            result.append(_make("layer1g", data_dir / f"layer1g{q}.tar", functools.partial(_gen_layer, total=total)))
        else:
            raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(ALL_DATASETS)}")
    return result


def warm(dataset: Dataset) -> None:
    """Read the dataset files once so that every measured run starts with them in the page cache."""
    for d in (dataset.parent, dataset):
        if d is not None:
            with open(d.path, "rb") as f:
                while f.read(8 * _CHUNK):
                    pass


if __name__ == "__main__":
    _args = [a for a in sys.argv[1:] if a != "--quick"]
    for ds in build_datasets(_args or list(ALL_DATASETS), quick="--quick" in sys.argv[1:]):
        print(ds.describe())
