"""Fixtures for the tar-split tests: archives made by real tar programs, and the Go tool as oracle."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from layerstore.testing import driver_required

BIG_SIZE = 3 * 1024 * 1024 + 123
LONG_DIR = "d" * 60 + "/" + "e" * 60  # with the file below: a path of more than 255 bytes
LONG_FILE = "f" * 150
LONG_NAME_100 = "x" * 120
LONG_TARGET = "t" * 150
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.txt")
HTML_NAME = 'a<b>&c"d\\e'


def need_tool(tool: str) -> str:
    """Path of `tool`; skip without it on a dev machine, fail where CI requires everything."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package: tar-split / tar / libarchive-tools)"
        if driver_required("tarsplit"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> None:
    """Run a command, failing the test with its stderr."""
    result = subprocess.run([os.fspath(a) for a in argv], cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{argv} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")


def extracted_layer(tar: Path, extracted: Path) -> tuple[bytes, bytes, Path]:
    """(tar bytes, its tar-split metadata, the directory `extracted` where GNU tar extracted it)."""
    from layerstore.tarsplit import disassemble

    extracted.mkdir()
    run("tar", "-xf", tar, "-C", extracted)
    metadata = io.BytesIO()
    with open(tar, "rb") as f:
        disassemble(f, metadata)
    return tar.read_bytes(), metadata.getvalue(), extracted


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_stream(stream: Any, read_size: int = 1 << 20) -> str:
    """Hex sha256 of everything read from a stream."""
    digest = hashlib.sha256()
    while chunk := stream.read(read_size):
        digest.update(chunk)
    return digest.hexdigest()


def opener(root: Path) -> Callable[[str], Any]:
    """open_file for assemble(): member names joined to `root` (assemble closes what it opens)."""

    def open_file(name: str) -> Any:
        return open(root / name.lstrip("/"), "rb")

    return open_file


def make_tree(root: Path, *, long_names: bool, non_utf8: bool = True, xattrs: bool = False, big: bool = True) -> None:
    """Create the test tree: every kind of member tar-split must handle."""
    top = root / "top"
    (top / "sub").mkdir(parents=True)
    (top / "empty").write_bytes(b"")
    (top / "small.txt").write_bytes(b"hello tar-split\n")
    (top / "exact512").write_bytes(bytes(range(256)) * 2)  # content that needs no padding
    os.symlink("small.txt", top / "link")
    os.link(top / "small.txt", top / "hard")
    (top / "sub" / HTML_NAME).write_bytes(b"json escapes\n")
    if big:
        (top / "big.bin").write_bytes(random.Random(7).randbytes(BIG_SIZE))
    if non_utf8:
        (top / NON_UTF8).write_bytes(b"latin-1 name\n")
    if long_names:
        (top / LONG_DIR).mkdir(parents=True)
        (top / LONG_DIR / LONG_FILE).write_bytes(b"deep\n" * 100)
        (top / LONG_NAME_100).write_bytes(b"long name\n")
        os.symlink(LONG_TARGET, top / "longlink")
    if xattrs:
        os.setxattr(top / "small.txt", "user.tarsplit", b"value")
    for path in sorted(top.rglob("*"), reverse=True):
        if not path.is_symlink():
            os.utime(path, (1_600_000_000, 1_600_000_000))


def gnu_tar(fmt: str) -> Callable[[Path, Path], None]:
    """Archive builder using GNU tar --format=fmt (member names start with ./)."""

    def build(src: Path, out: Path) -> None:
        extra = ["--xattrs"] if fmt == "posix" else []
        run(need_tool("tar"), "-C", src, "--sort=name", f"--format={fmt}", *extra, "-cf", out, ".")

    return build


def bsd_tar(fmt: str) -> Callable[[Path, Path], None]:
    """Archive builder using bsdtar --format fmt."""

    def build(src: Path, out: Path) -> None:
        run(need_tool("bsdtar"), "-C", src, "--format", fmt, "-cf", out, "top")

    return build


def py_tar(fmt: int, global_headers: dict[str, str] | None = None) -> Callable[[Path, Path], None]:
    """Archive builder using Python's tarfile."""

    def build(src: Path, out: Path) -> None:
        with tarfile.open(out, "w", format=fmt, pax_headers=global_headers or {}) as tf:
            tf.add(src / "top", arcname="top")

    return build


def with_trailing(builder: Callable[[Path, Path], None], junk: bytes) -> Callable[[Path, Path], None]:
    """Builder that appends `junk` after the archive's end-of-archive blocks."""

    def build(src: Path, out: Path) -> None:
        builder(src, out)
        with open(out, "ab") as f:
            f.write(junk)

    return build


TREE_FULL = {"long_names": True, "xattrs": False}
TREE_SHORT = {"long_names": False, "xattrs": False}

#: name -> (builder, tree options)
VARIANTS: dict[str, tuple[Callable[[Path, Path], None], dict[str, bool]]] = {
    "gnutar-gnu": (gnu_tar("gnu"), TREE_FULL),
    "gnutar-oldgnu": (gnu_tar("oldgnu"), TREE_FULL),
    "gnutar-posix-xattrs": (gnu_tar("posix"), {"long_names": True, "xattrs": True}),
    "gnutar-ustar": (gnu_tar("ustar"), TREE_SHORT),
    "gnutar-v7": (gnu_tar("v7"), TREE_SHORT),
    "bsdtar-pax-xattrs": (bsd_tar("pax"), {"long_names": True, "xattrs": True}),
    "bsdtar-ustar": (bsd_tar("ustar"), TREE_SHORT),
    "tarfile-gnu": (py_tar(tarfile.GNU_FORMAT), TREE_FULL),
    "tarfile-pax": (py_tar(tarfile.PAX_FORMAT), TREE_FULL),
    "tarfile-pax-global": (py_tar(tarfile.PAX_FORMAT, {"comment": "global <header>"}), TREE_SHORT),
    "gnutar-gnu-junk": (with_trailing(gnu_tar("gnu"), b"junk after the end" + bytes(2048)), TREE_SHORT),
    "tarfile-gnu-big-junk": (
        with_trailing(py_tar(tarfile.GNU_FORMAT), random.Random(3).randbytes(2_500_000)),
        TREE_SHORT,
    ),
    "tarfile-gnu-zero-blocks": (with_trailing(py_tar(tarfile.GNU_FORMAT), bytes(512 * 7)), TREE_SHORT),
}


class Archive:
    """One test archive with its extracted tree and its metadata made by us and by Go's tar-split."""

    def __init__(self, base: Path, name: str) -> None:
        builder, tree = VARIANTS[name]
        self.base = base
        self.source = base / "src"
        make_tree(self.source, **tree)
        self.tar = base / f"{name}.tar"
        builder(self.source, self.tar)
        self.extracted = base / "extracted"
        self.extracted.mkdir()
        run(need_tool("tar"), "-xf", self.tar, "-C", self.extracted)
        self.go_metadata = base / "go-tar-data.json.gz"
        run(need_tool("tar-split"), "disasm", "--no-stdout", "--output", self.go_metadata, self.tar)

    def open_file(self, name: str) -> Any:
        """open_file for assemble(): the member name joined to the extracted tree."""
        return open(self.extracted / name.lstrip("/"), "rb")


def go_entries(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a tar-split metadata file, empty segments dropped (older Go versions add one)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        objects = [json.loads(line) for line in f]
    kept = [o for o in objects if not (o["type"] == 2 and not o.get("payload"))]
    for position, obj in enumerate(kept):
        obj["position"] = position
    return kept


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Each test archive variant, built once per module."""
    return Archive(tmp_path_factory.mktemp(request.param), request.param)
