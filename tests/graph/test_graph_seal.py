"""The export seal: an export skips hashing the whole tar only for metadata that is provably the imported one."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest
from graph_helpers import make_tar, tar_stream

from layerstore.errors import DigestMismatch
from layerstore.graph import Graph

CONTENT = {"etc": None, "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "data.bin": os.urandom(300_000)}


def _export(graph: Graph, image_id: str) -> tuple[bytes, str | None]:
    """The exported bytes and the stream's ``digest`` (None when it did not hash the whole tar)."""
    with graph.tar_layer(image_id) as stream:
        data = stream.read()
        return data, getattr(stream, "digest", "no digest attribute")


def _meta(graph: Graph, image_id: str) -> Path:
    return graph.image_root(image_id) / "tar-data.json.gz"


def _seal(graph: Graph, image_id: str) -> Path:
    return graph.image_root(image_id) / "tar-data.seal"


def test_import_seals_the_metadata_with_the_layer_digest(graph: Graph) -> None:
    raw = make_tar(CONTENT)
    image = graph.create(tar_stream(CONTENT))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    meta_digest = "sha256:" + hashlib.sha256(_meta(graph, image.id).read_bytes()).hexdigest()
    assert graph.get_digest(image.id) == digest
    assert _seal(graph, image.id).read_text() == f"{meta_digest} {digest}\n"


def test_a_sealed_layer_exports_byte_exact_without_hashing_the_whole_tar(graph: Graph) -> None:
    raw = make_tar(CONTENT)
    image = graph.create(tar_stream(CONTENT))
    data, digest = _export(graph, image.id)
    assert data == raw
    assert digest is None


def _rewrite_metadata(path: Path, transform) -> None:  # type: ignore[no-untyped-def]
    objects = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    text = "".join(json.dumps(o) + "\n" for o in transform(objects))
    path.write_bytes(gzip.compress(text.encode(), compresslevel=1))


def test_metadata_changed_since_import_is_caught_by_hashing_the_whole_tar(graph: Graph) -> None:
    """A header changed in the metadata passes every file's CRC-64; only the whole tar's sha256 shows it."""
    image = graph.create(tar_stream(CONTENT))

    def change_a_header(objects: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        segment = next(o for o in objects if o["type"] == 2 and o.get("payload"))
        payload = bytearray(base64.b64decode(segment["payload"]))
        payload[100] ^= 0x01  # inside the first header's mode field: a different tar, the same files
        segment["payload"] = base64.b64encode(bytes(payload)).decode()
        return objects

    _rewrite_metadata(_meta(graph, image.id), change_a_header)
    with pytest.raises(DigestMismatch, match=image.id):
        _export(graph, image.id)


def test_metadata_recompressed_since_import_still_exports_after_hashing(graph: Graph) -> None:
    raw = make_tar(CONTENT)
    image = graph.create(tar_stream(CONTENT))
    _rewrite_metadata(_meta(graph, image.id), lambda objects: objects)
    data, digest = _export(graph, image.id)
    assert data == raw
    assert digest == graph.get_digest(image.id)


@pytest.mark.parametrize("seal", [None, b"", b"garbage\n", b"sha256:00 sha256:11 sha256:22\n", b"\xff\xfe\n"])
def test_a_missing_or_malformed_seal_means_hashing_the_whole_tar(graph: Graph, seal: bytes | None) -> None:
    """Layers imported before seals existed, or a damaged seal: the export hashes and checks, as before."""
    raw = make_tar(CONTENT)
    image = graph.create(tar_stream(CONTENT))
    if seal is None:
        _seal(graph, image.id).unlink()
    else:
        _seal(graph, image.id).write_bytes(seal)
    data, digest = _export(graph, image.id)
    assert data == raw
    assert digest == graph.get_digest(image.id)
    graph.set_digest(image.id, "sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch, match=image.id):
        _export(graph, image.id)


def test_a_digest_set_after_import_is_checked_against_the_whole_tar(graph: Graph) -> None:
    image = graph.create(tar_stream(CONTENT))
    graph.set_digest(image.id, "sha256:" + "1" * 64)
    with pytest.raises(DigestMismatch, match=image.id):
        _export(graph, image.id)


def test_check_hashes_a_sealed_layer_whole(graph: Graph) -> None:
    image = graph.create(tar_stream(CONTENT))
    (result,) = [r for r in graph.check() if r.id == image.id]
    assert result.ok
    assert result.actual == graph.get_digest(image.id)


@pytest.mark.parametrize("sealed", [True, False])
def test_the_stream_names_the_digest_it_is_checked_against(graph: Graph, sealed: bool) -> None:
    """`checked_against` lets `save` count a layer instead of hashing it again: sealed or hashed, it is the digest."""
    image = graph.create(tar_stream(CONTENT))
    if not sealed:
        _seal(graph, image.id).unlink()
    with graph.tar_layer(image.id) as stream:
        assert getattr(stream, "checked_against", None) == graph.get_digest(image.id)
    (graph.image_root(image.id) / "tar-data.json.gz").unlink()  # no metadata: the driver's diff, checked by nothing
    with graph.tar_layer(image.id) as stream:
        assert getattr(stream, "checked_against", None) is None
