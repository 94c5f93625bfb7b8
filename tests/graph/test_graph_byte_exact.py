"""import -> export is byte-exact for tars made now by GNU tar, bsdtar and Python's tarfile.

The oracle is the tar file itself (sha256), and Debian's `tar-split` program:
it reassembles our tar-data.json.gz against the mounted layer, and our export
reassembles the metadata that `tar-split disasm` wrote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from layerstore.drivers import Driver
from layerstore.graph import Graph
from layerstore.image import Image, generate_id

TRAILER = b"\0" * 1024 + b"bytes after the end of the archive\n" + b"\0" * 100

LONG_DIR = "a-directory-with-a-rather-long-name-" + "x" * 40
LONG_FILE = "and-a-file-name-that-is-long-too-" + "y" * 90 + ".txt"


def build_tree(root: Path, *, long_names: bool, non_utf8: bool, xattrs: bool) -> None:
    """A small tree with the features a layer tar carries."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "empty").write_bytes(b"")
    for size in (1, 511, 512, 513, 70_000):
        (root / f"size-{size}").write_bytes(os.urandom(size))
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o4755)
    os.link(root / "etc" / "hosts", root / "hosts-hardlink")
    os.symlink("etc/hosts", root / "hosts-symlink")
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    if long_names:
        deep = root / LONG_DIR / "sub"
        deep.mkdir(parents=True)
        (deep / LONG_FILE).write_bytes(b"long name content\n")
        os.symlink("../" + "t" * 150, root / "long-target-symlink")
        os.link(deep / LONG_FILE, root / ("hardlink-to-long-" + "z" * 90))
    if non_utf8:
        (root / os.fsdecode(b"caf\xe9-latin1")).write_bytes(b"latin-1 name\n")
    if xattrs:
        os.setxattr(root / "etc" / "hosts", "user.comment", b"hello xattr")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_500_000_000, 1_500_000_000), follow_symlinks=False)


def gnu_tar(fmt: str, xattrs: bool = False) -> list[str]:
    argv = ["tar", f"--format={fmt}", "--numeric-owner"]
    if xattrs:
        argv += ["--xattrs", "--xattrs-include=user.*"]
    return argv


PRODUCERS = {
    # name: (feature flags, how to make it)
    "gnutar-gnu": {"long_names": True, "non_utf8": True, "xattrs": False, "cmd": gnu_tar("gnu")},
    "gnutar-oldgnu": {"long_names": True, "non_utf8": True, "xattrs": False, "cmd": gnu_tar("oldgnu")},
    "gnutar-posix": {"long_names": True, "non_utf8": True, "xattrs": True, "cmd": gnu_tar("posix", xattrs=True)},
    "gnutar-ustar": {"long_names": False, "non_utf8": True, "xattrs": False, "cmd": gnu_tar("ustar")},
    "gnutar-v7": {"long_names": False, "non_utf8": True, "xattrs": False, "cmd": gnu_tar("v7")},
    "bsdtar-pax": {"long_names": True, "non_utf8": True, "xattrs": True,
                       "cmd": ["bsdtar", "--format", "pax", "--xattrs", "--numeric-owner"]},
    "bsdtar-ustar": {"long_names": False, "non_utf8": True, "xattrs": False,
                         "cmd": ["bsdtar", "--format", "ustar", "--numeric-owner"]},
    "python-gnu": {"long_names": True, "non_utf8": True, "xattrs": False, "fmt": tarfile.GNU_FORMAT},
    "python-pax": {"long_names": True, "non_utf8": True, "xattrs": False, "fmt": tarfile.PAX_FORMAT},
}


def make_layer_tar(tmp_path: Path, producer: str) -> bytes:
    spec = PRODUCERS[producer]
    src = tmp_path / "src"
    build_tree(src, long_names=bool(spec["long_names"]), non_utf8=bool(spec["non_utf8"]), xattrs=bool(spec["xattrs"]))
    out = tmp_path / "layer.tar"
    if "cmd" in spec:
        cmd = list(spec["cmd"])  # type: ignore[call-overload]
        if shutil.which(cmd[0]) is None:
            pytest.skip(f"{cmd[0]} is not installed")
        names = sorted(os.listdir(os.fsencode(src)))
        if cmd[0] == "tar":
            subprocess.run([*cmd, "-C", src, "-cf", out, "--", *names], check=True, env={**os.environ, "LC_ALL": "C"})
        else:
            subprocess.run([*cmd, "-C", src, "-cf", out, *names], check=True, env={**os.environ, "LC_ALL": "C"})
    else:
        with tarfile.open(out, "w", format=spec["fmt"]) as tf:  # type: ignore[call-overload]
            for name in sorted(os.listdir(src)):
                tf.add(src / name, arcname=name)
    data = out.read_bytes() + TRAILER
    # The producer really made what we meant to test.
    names = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True).stdout
    if spec["long_names"]:
        assert LONG_FILE.encode() in names
    return data


@pytest.fixture(params=sorted(PRODUCERS))
def layer(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, bytes]:
    return request.param, make_layer_tar(tmp_path, request.param)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_import_export_is_byte_exact(graph: Graph, driver: Driver, layer: tuple[str, bytes], tmp_path: Path) -> None:
    producer, raw = layer
    image = Image(id=generate_id(), comment=producer)
    graph.register(image, open_bytes(tmp_path, raw))
    assert graph.get_digest(image.id) == "sha256:" + _sha(raw)
    with graph.tar_layer(image) as stream:
        exported = stream.read()
    assert len(exported) == len(raw)
    assert _sha(exported) == _sha(raw)
    assert graph.tar_size(image.id) == len(raw)  # from the metadata alone
    results = list(graph.check())
    assert [r.ok for r in results] == [True], results
    if PRODUCERS[producer]["xattrs"]:
        with driver.mounted(image.id) as path:
            assert os.getxattr(Path(path, "etc/hosts"), "user.comment") == b"hello xattr"


def open_bytes(tmp_path: Path, data: bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / "input.tar"
    path.write_bytes(data)
    return open(path, "rb")


def _tar_split() -> str:
    path = shutil.which("tar-split")
    if path is None:
        pytest.skip("Debian's tar-split is not installed (apt-get install tar-split)")
    return path


def test_tar_split_tool_reassembles_our_metadata(graph: Graph, driver: Driver, layer: tuple[str, bytes],
                                                 tmp_path: Path) -> None:
    tool = _tar_split()
    _, raw = layer
    image = Image(id=generate_id())
    graph.register(image, open_bytes(tmp_path, raw))
    out = tmp_path / "by-tar-split.tar"
    with driver.mounted(image.id) as path:
        subprocess.run([tool, "asm", "--input", graph.image_root(image.id) / "tar-data.json.gz",
                        "--path", path, "--output", out], check=True, capture_output=True)
    assert _sha(out.read_bytes()) == _sha(raw)


def test_we_reassemble_tar_split_tool_metadata(graph: Graph, layer: tuple[str, bytes], tmp_path: Path) -> None:
    tool = _tar_split()
    _, raw = layer
    image = Image(id=generate_id())
    graph.register(image, open_bytes(tmp_path, raw))
    theirs = tmp_path / "theirs.json.gz"
    subprocess.run([tool, "disasm", "--no-stdout", "--output", theirs, "-"], input=raw, check=True, capture_output=True)
    shutil.copyfile(theirs, graph.image_root(image.id) / "tar-data.json.gz")
    with graph.tar_layer(image) as stream:
        assert _sha(stream.read()) == _sha(raw)


def test_tar_size_of_a_layer_without_metadata_counts_its_tar(graph: Graph) -> None:
    image = Image(id=generate_id(), comment="no layer data")
    graph.register(image, None)
    with graph.tar_layer(image) as stream:
        assert graph.tar_size(image) == len(stream.read())
