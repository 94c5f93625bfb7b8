"""`import`'s check for image archives: decided from the first members of a layer tar, safe on anything."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from layerstore.images.archives import _may_be_image_tar, is_image_archive


def _tar(path: Path, names: list[str], fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"{}"))
    return path


def test_first_members_decide(tmp_path: Path) -> None:
    layer = _tar(tmp_path / "layer.tar", ["./", "./etc/", "./etc/hosts", "manifest.json"])
    assert not _may_be_image_tar(layer) and not is_image_archive(layer)
    pax = _tar(tmp_path / "pax.tar", ["usr/", "usr/bin/x"], tarfile.PAX_FORMAT)
    assert not _may_be_image_tar(pax)
    image = _tar(tmp_path / "image.tar", ["./", "blobs/", "oci-layout", "index.json"])
    assert _may_be_image_tar(image) and is_image_archive(image)
    docker = _tar(tmp_path / "docker.tar", ["a" * 64 + ".json", "manifest.json"])
    assert _may_be_image_tar(docker) and is_image_archive(docker)


def test_unreadable_starts_are_left_to_the_whole_list(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x01" * 4096)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(_tar(tmp_path / "whole.tar", ["manifest.json"]).read_bytes()[:700])
    for path in (garbage, empty, cut, tmp_path / "missing"):
        assert _may_be_image_tar(path)
    assert not is_image_archive(garbage) and not is_image_archive(empty)
