"""The download spool: blobs in order, at most `jobs` ahead of the reader, errors surface on read."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import IO

import pytest

from layerstore.images import Descriptor
from layerstore.registry.spool import Spool


def _descriptor(n: int) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest="sha256:" + f"{n:x}" * 64, size=3)


def test_spool_stays_bounded(tmp_path: Path) -> None:
    started: list[int] = []
    lock = threading.Lock()

    def opener(descriptor: Descriptor) -> IO[bytes]:
        with lock:
            started.append(int(descriptor.digest[-1], 16))
        return io.BytesIO(descriptor.digest[-1].encode() * 3)

    spool = Spool(opener, jobs=2, directory=tmp_path)
    descriptors = [_descriptor(n) for n in range(1, 6)]
    try:
        spool.start(descriptors)
        for descriptor in descriptors:
            with spool.open(descriptor) as blob:
                assert blob.read() == descriptor.digest[-1].encode() * 3
                # Never more than `jobs` blobs spooled or downloading and not yet closed by the reader.
                assert len(list(next(tmp_path.iterdir()).iterdir())) <= 2
    finally:
        spool.close()
    assert sorted(started) == [1, 2, 3, 4, 5]
    assert list(tmp_path.iterdir()) == []


def test_download_error_surfaces(tmp_path: Path) -> None:
    def opener(descriptor: Descriptor) -> IO[bytes]:
        raise OSError("boom")

    spool = Spool(opener, jobs=1, directory=tmp_path)
    try:
        spool.start([_descriptor(1)])
        with pytest.raises(OSError, match="boom"):
            spool.open(_descriptor(1)).read()
    finally:
        spool.close()
