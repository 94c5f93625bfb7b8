"""Deep trees and long names: nothing recurses per path level, and nothing poisons the store."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .conftest import Store


def _deep_tar(depth: int, component: str = "d") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        name = ""
        for _ in range(depth):
            name = f"{name}/{component}" if name else component
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tf.addfile(info)
        info = tarfile.TarInfo(f"{name}/file")
        info.size, info.mtime = 4, 1_600_000_000
        tf.addfile(info, io.BytesIO(b"deep"))
    return buf.getvalue()


def _whole(store: Store) -> None:
    """The store opens, check passes, gc leaves no staging behind."""
    store.ok("ls")
    store.ok("check")
    store.ok("gc")
    assert os.listdir(store.root / "graph" / "_tmp") == []


def _import_deep(store: Store, depth: int, out: Path) -> tuple[str, bytes]:
    """Import a `depth`-level layer; check its export (into `out`) and its diff; return its ID and tar."""
    raw = _deep_tar(depth)
    image = store.ok("import", "-", input=raw).strip()
    store.ok("export", image, "-o", out)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(raw).digest()
    changes = store.ok("diff", image).splitlines()
    assert len(changes) == depth + 1 and changes[-1].endswith("/d/file")
    return image, raw


def _segments_and_files(metadata: Path) -> list[dict[str, object]]:
    """tar-split metadata entries without empty segments (Go writes one at the end, we do not), renumbered."""
    with gzip.open(metadata, "rt", encoding="utf-8") as f:
        kept = [entry for entry in map(json.loads, f) if entry["type"] != 2 or entry.get("payload")]
    for position, entry in enumerate(kept):
        entry["position"] = position
    return kept


def _agrees_with_go_tar_split(store: Store, image: str, raw: bytes, tmp_path: Path, *, assemble: bool) -> None:
    """Debian's tar-split writes the metadata we recorded; with `assemble`, it also rebuilds `raw` from ours."""
    tar, go_metadata = tmp_path / "raw.tar", tmp_path / "go-tar-data.json.gz"
    tar.write_bytes(raw)
    subprocess.run(["tar-split", "disasm", "--no-stdout", "--output", go_metadata, tar], check=True,
                   capture_output=True)
    ours = store.root / "graph" / image / "tar-data.json.gz"
    assert _segments_and_files(ours) == _segments_and_files(go_metadata)
    if assemble:  # Go opens each file by its whole path: only below PATH_MAX
        root = store.ok("mount", image).strip()
        try:
            rebuilt = subprocess.run(["tar-split", "asm", "--input", ours, "--path", "."], cwd=root, check=True,
                                     capture_output=True).stdout
        finally:
            store.ok("umount", image)
        assert hashlib.sha256(rebuilt).digest() == hashlib.sha256(raw).digest()


def test_deep_layer_round_trip_and_removal(store: Store, tmp_path: Path) -> None:
    image, raw = _import_deep(store, 1900, tmp_path / "out.tar")  # below PATH_MAX, far beyond the recursion limit
    _agrees_with_go_tar_split(store, image, raw, tmp_path, assemble=True)
    _whole(store)
    store.ok("rm", image)
    _whole(store)
    assert json.loads(store.ok("ls", "--json")) == []


def test_names_at_path_max(store: Store, tmp_path: Path) -> None:
    long_name = "n" * 255  # NAME_MAX
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        path = "/".join([long_name] * 14)  # 3,583 bytes: with the file name and the store path just below PATH_MAX
        info = tarfile.TarInfo(f"{path}/{'f' * 200}")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    raw = buf.getvalue()
    image = store.ok("import", "-", input=raw).strip()
    out = tmp_path / "out.tar"
    store.ok("export", image, "-o", out)
    assert out.read_bytes() == raw
    store.ok("rm", image)
    _whole(store)


def test_5000_level_layer_through_the_command_line(store: Store, tmp_path: Path) -> None:
    """Paths of 10,000 bytes (far beyond PATH_MAX): import, export, diff, check, a child, rm."""
    keep = store.ok("import", "-", input=_deep_tar(3)).strip()
    out = tmp_path / "out.tar"
    image, raw = _import_deep(store, 5000, out)
    _agrees_with_go_tar_split(store, image, raw, tmp_path, assemble=False)
    child_raw = raw  # every entry again, at depth 5,000, over the same tree
    child = store.ok("import", "--parent", image, "-", input=child_raw).strip()
    store.ok("export", child, "-o", out)
    assert out.read_bytes() == child_raw
    _whole(store)
    store.ok("rm", child, image)
    _whole(store)
    assert [row["id"] for row in json.loads(store.ok("ls", "--json"))] == [keep]


_BUILD_DEEP = """
import os, sys
from layerstore import load_driver
driver = load_driver(sys.argv[1], sys.argv[2], runroot=sys.argv[3])
with driver.mounted(sys.argv[4]) as root:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(5000):
        os.mkdir("x", dir_fd=fd)
        child = os.open("x", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
driver.cleanup()
"""


def test_rm_of_a_5000_level_tree(store: Store) -> None:
    """A layer holding a 5,000-level tree (made on disk: no tar can carry such paths) is removed."""
    image = store.ok("import", "-", input=_deep_tar(1)).strip()
    subprocess.run([sys.executable, "-c", _BUILD_DEEP, store.driver, store.root / store.driver,
                    store.env["LAYERSTORE_RUNROOT"], image], check=True)
    store.ok("rm", image)
    _whole(store)
    assert json.loads(store.ok("ls", "--json")) == []


def test_import_parent_of_a_deep_layer(store: Store, tmp_path: Path) -> None:
    base = store.ok("import", "-", input=_deep_tar(1900)).strip()
    child_raw = _deep_tar(3, component="c")
    child = store.ok("import", "--parent", base, "-", input=child_raw).strip()
    out = tmp_path / "child.tar"
    store.ok("export", child, "-o", out)
    assert out.read_bytes() == child_raw
    store.ok("rm", child)
    store.ok("rm", base)
    _whole(store)
