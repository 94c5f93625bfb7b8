"""Graph semantics: layout, register (atomic, idempotent), delete rules, lookups, digests, size."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import threading
from pathlib import Path

import pytest
import zstandard
from graph_helpers import make_tar, tar_stream

from layerstore.drivers import Driver
from layerstore.errors import (
    AmbiguousID,
    CorruptMetadata,
    DigestMismatch,
    ImageNotFound,
    InvalidArchive,
    InvalidID,
    LayerInUse,
)
from layerstore.graph import DigestNotSet, Graph
from layerstore.image import Image, format_created, generate_id

BASE = {"etc": None, "etc/hosts": b"127.0.0.1 localhost\n", "bin": None, "bin/tool": b"\x7fELF" + b"x" * 3000}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _assert_nothing_of(graph: Graph, driver: Driver, image_id: str) -> None:
    assert not graph.exists(image_id)
    assert not graph.image_root(image_id).exists()
    assert not driver.exists(image_id)
    assert os.listdir(graph.root / "graph" / "_tmp") == []


def test_register_layout_and_lookup(graph: Graph, driver: Driver) -> None:
    raw = make_tar(BASE)
    image = Image(id=generate_id(), comment="base", created=format_created())
    assert graph.register(image, io.BytesIO(raw)) is True
    root = graph.root / "graph" / image.id
    assert sorted(os.listdir(root)) == ["checksum", "json", "layersize", "tar-data.json.gz", "tar-data.seal"]
    metadata = ("checksum", "json", "layersize", "tar-data.seal")
    assert all((root / name).stat().st_mode & 0o777 == 0o600 for name in metadata)
    assert (root / "checksum").read_text() == _sha(raw)
    assert int((root / "layersize").read_text()) == 20 + 3004 == image.size
    assert json.loads((root / "json").read_bytes())["Size"] == image.size
    assert graph.raw_json(image.id) == (root / "json").read_bytes()
    assert graph.exists(image.id) and graph.exists(image.id[:6])
    got = graph.get(image.id[:8])
    assert got == image
    assert graph.get_digest(image.id) == _sha(raw)
    assert driver.exists(image.id)
    with driver.mounted(image.id) as path:
        assert Path(path, "etc/hosts").read_bytes() == BASE["etc/hosts"]


def test_register_existing_is_a_no_op(graph: Graph) -> None:
    image = Image(id=generate_id(), comment="first")
    assert graph.register(image, tar_stream(BASE)) is True
    before = graph.raw_json(image.id)
    again = Image(id=image.id, comment="second")
    assert graph.register(again, tar_stream({"other": b"x"})) is False
    assert graph.raw_json(image.id) == before
    assert graph.get(image.id).comment == "first"


@pytest.mark.parametrize(
    "compress",
    [lambda b: b, gzip.compress, bz2.compress, lzma.compress, lambda b: zstandard.ZstdCompressor().compress(b)],
    ids=["plain", "gzip", "bzip2", "xz", "zstd"],
)
def test_compressed_input_digest_is_of_the_uncompressed_tar(graph: Graph, compress: object) -> None:
    raw = make_tar(BASE)
    image = graph.create(io.BytesIO(compress(raw)))  # type: ignore[operator]
    assert graph.get_digest(image.id) == _sha(raw)
    with graph.tar_layer(image) as stream:
        assert stream.read() == raw


def test_create_fills_engine_fields(graph: Graph) -> None:
    image = graph.create(tar_stream(BASE), comment="c", author="me", config={"Cmd": ["sh"]})
    assert image.architecture and image.os == "linux"
    assert image.created.endswith("Z")
    child = graph.create(tar_stream({"x": b"1"}), container_id="cid", container_image=image.id[:10],
                         container_config={"Hostname": "h"})
    assert child.parent == image.id and child.container == "cid"
    assert graph.get(child.id).container_config == {"Hostname": "h"}


def test_missing_parent_leaves_nothing(graph: Graph, driver: Driver) -> None:
    image = Image(id=generate_id(), parent=generate_id())
    with pytest.raises(ImageNotFound, match=image.parent):
        graph.register(image, tar_stream(BASE))
    _assert_nothing_of(graph, driver, image.id)


@pytest.mark.parametrize(
    "data",
    [b"this is not a tar archive at all" * 40, gzip.compress(make_tar(BASE))[:-40], make_tar({"../escape": b"x"})],
    ids=["garbage", "truncated-gzip", "unsafe"],
)
def test_failed_register_leaves_nothing(graph: Graph, driver: Driver, data: bytes, tmp_path: Path) -> None:
    image = Image(id=generate_id())
    with pytest.raises(InvalidArchive):
        graph.register(image, io.BytesIO(data))
    _assert_nothing_of(graph, driver, image.id)
    assert not (tmp_path / "escape").exists() and not (graph.root / "escape").exists()


def test_register_checks_the_digest_before_the_image_is_visible(graph: Graph, driver: Driver) -> None:
    """`check` sees the layer's digest while no other reader can see the image; what it raises discards it."""
    data = make_tar(BASE)
    image = Image(id=generate_id())
    seen: list[tuple[str, bool]] = []

    def refuse(digest: str) -> None:
        seen.append((digest, Graph(graph.root, driver).exists(image.id)))
        raise DigestMismatch("not the content the image names")

    with pytest.raises(DigestMismatch, match="not the content"):
        graph.register(image, io.BytesIO(data), check=refuse)
    assert seen == [(_sha(data), False)]
    _assert_nothing_of(graph, driver, image.id)

    assert graph.register(image, io.BytesIO(data), check=lambda digest: seen.append((digest, True)))
    assert graph.get_digest(image.id) == _sha(data) and len(seen) == 2


class _Interrupting(io.RawIOBase):
    def __init__(self, data: bytes, after: int) -> None:
        self._data = io.BytesIO(data)
        self._after = after

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        if self._data.tell() >= self._after:
            raise KeyboardInterrupt
        chunk = self._data.read(min(len(b), 4096))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_keyboard_interrupt_mid_import_leaves_nothing(graph: Graph, driver: Driver) -> None:
    raw = make_tar({"big": os.urandom(200_000), "small": b"s"})
    image = Image(id=generate_id())
    with pytest.raises(KeyboardInterrupt):
        graph.register(image, io.BufferedReader(_Interrupting(raw, 100_000)))
    _assert_nothing_of(graph, driver, image.id)


def test_delete_rules_children_retain_mount(graph: Graph, driver: Driver) -> None:
    parent = graph.create(tar_stream(BASE))
    child = graph.create(tar_stream({"etc/.wh.hosts": b""}), parent=parent.id)
    assert graph.has_children(parent) and not graph.has_children(child.id)
    with pytest.raises(LayerInUse, match=child.id[:12]):
        graph.delete(parent.id)
    with pytest.raises(LayerInUse, match=child.id[:12]):
        graph.delete(parent.id, force=True)

    graph.retain("pull-1", child.id)
    assert graph.is_held(child.id)
    with pytest.raises(LayerInUse, match="held"):
        graph.delete(child.id)
    graph.release("pull-1", child.id)
    assert not graph.is_held(child.id)

    driver.get(child.id)
    with pytest.raises(LayerInUse, match="mounted"):
        graph.delete(child.id)
    assert graph.exists(child.id)
    graph.delete(child.id, force=True)
    assert not graph.exists(child.id) and not driver.exists(child.id)

    graph.retain("s", parent.id)
    graph.delete(parent.id[:7], force=True)
    assert graph.map() == {}
    assert os.listdir(graph.root / "graph" / "_tmp") == []

    with pytest.raises(ImageNotFound):
        graph.delete(parent.id)


def test_a_mount_after_the_check_of_delete_keeps_the_image(graph: Graph, driver: Driver,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`mount` does not take the image's lock: one that lands after `delete` counted no reference wins.

    `delete` then fails as if it had seen the mount, and the image stays whole
    (the mount's path stays valid, and its `umount` finds the image).
    """
    image = graph.create(tar_stream(BASE))
    exported = graph.tar_layer(image.id).read()
    counted = driver.references

    def mounted_right_after(layer_id: str) -> int:
        refs = counted(layer_id)
        driver.get(layer_id)  # another process's `mount`, between the check and the removal
        return refs

    monkeypatch.setattr(driver, "references", mounted_right_after)
    with pytest.raises(LayerInUse, match="mounted"):
        graph.delete(image.id)
    monkeypatch.undo()
    assert graph.exists(image.id) and driver.exists(image.id) and driver.references(image.id) == 1
    assert graph.tar_layer(image.id).read() == exported
    driver.put(image.id)
    graph.delete(image.id)
    assert not graph.exists(image.id) and not driver.exists(image.id)


def test_walk_map_by_parent_heads(graph: Graph) -> None:
    base = graph.create(tar_stream(BASE))
    a = graph.create(tar_stream({"a": b"a"}), parent=base.id)
    b = graph.create(tar_stream({"b": b"b"}), parent=base.id)
    c = graph.create(tar_stream({"c": b"c"}), parent=a.id)
    assert set(graph.map()) == {base.id, a.id, b.id, c.id}
    seen: list[str] = []
    graph.walk_all(lambda img: seen.append(img.id))
    assert sorted(seen) == sorted(graph.map())
    by_parent = graph.by_parent()
    assert sorted(i.id for i in by_parent[base.id]) == sorted([a.id, b.id])
    assert [i.id for i in by_parent[a.id]] == [c.id]
    assert b.id not in by_parent and c.id not in by_parent
    assert set(graph.heads()) == {b.id, c.id}
    assert graph.children(base.id) == sorted([a.id, b.id])


def test_prefix_lookup_errors(graph: Graph) -> None:
    ids = ["ab" + generate_id()[2:], "ab" + generate_id()[2:]]
    for ident in ids:
        graph.register(Image(id=ident), tar_stream({"f": ident.encode()}))
    with pytest.raises(AmbiguousID) as info:
        graph.get("ab")
    assert ids[0] in str(info.value) and ids[1] in str(info.value)
    assert graph.get(ids[0][:20]).id == ids[0]
    with pytest.raises(InvalidID):
        graph.get("")
    with pytest.raises(InvalidID):
        graph.get("ab cd")
    with pytest.raises(ImageNotFound):
        graph.get("0123456789abcdef")
    with pytest.raises(ImageNotFound):
        graph.get(generate_id())


def test_layersize_recomputed_when_missing(graph: Graph) -> None:
    image = graph.create(tar_stream(BASE))
    size_file = graph.image_root(image.id) / "layersize"
    size_file.unlink()
    assert graph.get(image.id).size == image.size
    assert size_file.read_text() == str(image.size)
    size_file.write_text("lots")
    with pytest.raises(CorruptMetadata, match="layersize"):
        graph.get(image.id)


def test_a_reader_racing_a_delete_never_misses_the_size(graph: Graph) -> None:
    """A delete renames the metadata away at once: a reader sees all of it or none, never a missing size.

    A size read as missing would make the reader recompute it by mounting
    the layer, and that reference makes the delete fail ("mounted").
    """
    image = graph.create(tar_stream(BASE))
    root = graph.image_root(image.id)
    trash = graph.root / "graph" / "_tmp" / "racing"
    stop = threading.Event()

    def delete_and_restore() -> None:
        while not stop.is_set():
            os.rename(root, trash)
            os.rename(trash, root)

    renamer = threading.Thread(target=delete_and_restore)
    renamer.start()
    seen = {"whole": 0, "gone": 0}
    try:
        for _ in range(5000):
            try:
                loaded, size = graph.files.load(image.id)
            except ImageNotFound:
                seen["gone"] += 1
                continue
            assert size == image.size and loaded.id == image.id
            seen["whole"] += 1
    finally:
        stop.set()
        renamer.join()
    assert seen["whole"] and seen["gone"], seen  # both sides of the race were run


def test_digest_set_get_and_not_set(graph: Graph) -> None:
    empty = graph.create(None)
    with pytest.raises(DigestNotSet):
        graph.get_digest(empty.id)
    graph.set_digest(empty.id, "sha256:" + "0" * 64)
    assert graph.get_digest(empty.id) == "sha256:" + "0" * 64


def test_tar_layer_falls_back_to_driver_diff_without_metadata(graph: Graph) -> None:
    image = graph.create(tar_stream(BASE))
    (graph.image_root(image.id) / "tar-data.json.gz").unlink()
    import tarfile

    with graph.tar_layer(image) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
        names = {m.name: (tf.extractfile(m).read() if m.isfile() else None) for m in tf}  # type: ignore[union-attr]
    assert names["etc/hosts"] == BASE["etc/hosts"]


def test_tar_layer_releases_the_mount_on_close(graph: Graph, driver: Driver) -> None:
    image = graph.create(tar_stream(BASE))
    stream = graph.tar_layer(image)
    assert driver.references(image.id) == 1
    stream.read(10)
    stream.close()
    assert driver.references(image.id) == 0


def test_write_layer_to_a_pipe_a_file_descriptor_and_a_file_object(graph: Graph, tmp_path: Path) -> None:
    raw = make_tar({**BASE, "big": os.urandom(3 << 20)}, trailing=b"\0" * 1024)
    image = graph.create(io.BytesIO(raw))
    # A pipe: another thread drains it while write_layer writes (which widens it).
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        seen: list[int] = []
        assert graph.write_layer(image, write_end, seen.append) == len(raw)
    finally:
        os.close(write_end)
        reader.join()
        os.close(read_end)
    assert bytes(received) == raw
    assert sum(seen) == len(raw)
    with open(tmp_path / "out.tar", "wb") as f:
        f.write(b"head")  # buffered in the file object: must come first
        assert graph.write_layer(image.id[:8], f) == len(raw)
    assert (tmp_path / "out.tar").read_bytes() == b"head" + raw
    memory = io.BytesIO()
    assert graph.write_layer(image, memory) == len(raw)
    assert memory.getvalue() == raw
    assert graph.driver.references(image.id) == 0


def test_write_layer_reports_a_changed_layer_and_releases_it(graph: Graph, driver: Driver) -> None:
    image = graph.create(tar_stream(BASE))
    graph.set_digest(image.id, "sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch, match=image.id):
        graph.write_layer(image, io.BytesIO())
    assert driver.references(image.id) == 0


def test_temp_layer_archive(graph: Graph) -> None:
    raw = make_tar(BASE, trailing=b"\0" * 4096)
    image = graph.create(io.BytesIO(raw))
    seen: list[int] = []
    with graph.temp_layer_archive(image.id[:9], progress=seen.append) as tmp:
        assert tmp.read() == raw
        assert os.listdir(graph.root / "graph" / "_tmp") == []  # anonymous file
    assert sum(seen) == len(raw)


def test_metadata_without_driver_layer_is_not_an_image(graph: Graph, driver: Driver) -> None:
    image = graph.create(tar_stream(BASE))
    driver.remove(image.id)
    assert not graph.exists(image.id)
    assert graph.map() == {}
    # Registering again starts fresh (the graph is the source of truth).
    assert graph.register(Image(id=image.id), tar_stream({"new": b"n"})) is True
    assert graph.get(image.id).size == 1


def test_check_reports_every_layer(graph: Graph) -> None:
    a = graph.create(tar_stream(BASE))
    b = graph.create(tar_stream({"x": b"y"}), parent=a.id)
    results = {r.id: r for r in graph.check()}
    assert set(results) == {a.id, b.id}
    assert all(r.ok for r in results.values())
    assert results[a.id].actual == graph.get_digest(a.id)
