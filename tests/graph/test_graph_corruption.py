"""A stored layer whose files changed on disk: export and check fail, naming the file."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from graph_helpers import make_tar, tar_stream

from layerstore.drivers import Driver
from layerstore.errors import DigestMismatch
from layerstore.graph import Graph

CONTENT = {"etc": None, "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "data.bin": os.urandom(50_000)}


@contextlib.contextmanager
def _no_hang() -> Iterator[None]:
    """Fail instead of hanging: opening a FIFO for reading would wait for a writer that never comes."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError("the export is blocked (opening a FIFO in the layer waits for a writer)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _layer_path(driver: Driver, image_id: str) -> Path:
    with driver.mounted(image_id) as path:
        return Path(path)


@pytest.mark.parametrize("change", ["same-size", "longer", "removed", "fifo"])
def test_changed_file_fails_export_and_check(graph: Graph, driver: Driver, change: str) -> None:
    good = graph.create(tar_stream({"other": b"fine"}))
    image = graph.create(tar_stream(CONTENT))
    target = _layer_path(driver, image.id) / "etc" / "passwd"
    if change == "same-size":
        data = bytearray(target.read_bytes())
        data[0] ^= 0x20
        target.write_bytes(bytes(data))
    elif change == "longer":
        with open(target, "ab") as f:
            f.write(b"intruder::0:0::/:/bin/sh\n")
    elif change == "fifo":
        target.unlink()
        os.mkfifo(target)
    else:
        target.unlink()

    with _no_hang(), pytest.raises(DigestMismatch, match="etc/passwd"), graph.tar_layer(image) as stream:
        while stream.read(1 << 16):
            pass
    assert driver.references(image.id) == 0  # the failed export released the mount

    results = {r.id: r for r in graph.check()}
    assert results[good.id].ok
    assert not results[image.id].ok
    assert "etc/passwd" in results[image.id].message


def test_whole_tar_digest_is_verified_at_the_end(graph: Graph) -> None:
    raw = make_tar(CONTENT)
    image = graph.create(tar_stream(CONTENT))
    graph.set_digest(image.id, "sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch, match=image.id), graph.tar_layer(image) as stream:
        assert stream.read(len(raw)) == raw
        stream.read()
