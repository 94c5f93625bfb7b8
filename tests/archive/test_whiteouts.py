"""Canonical whiteouts applied in the "delete" format (full-copy drivers)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, outside_untouched

from layerstore.archive.apply import apply_tar


@pytest.fixture
def lower(layer: Path) -> Path:
    for rel in ("etc/passwd", "etc/group", "opt/app/bin/run", "opt/app/lib/x.so", "opt/keep", "var/log/old"):
        (layer / rel).parent.mkdir(parents=True, exist_ok=True)
        (layer / rel).write_text(rel)
    return layer


def _apply(layer: Path, builder: TarBuilder) -> int:
    return apply_tar(builder.stream(), layer)


def test_file_whiteout_deletes_the_file(lower: Path) -> None:
    _apply(lower, TarBuilder().add("etc/.wh.passwd"))
    assert sorted(os.listdir(lower / "etc")) == ["group"]


def test_directory_whiteout_deletes_the_subtree(lower: Path) -> None:
    _apply(lower, TarBuilder().add("opt/.wh.app"))
    assert sorted(os.listdir(lower / "opt")) == ["keep"]


def test_whiteout_of_missing_path_is_harmless(lower: Path) -> None:
    _apply(lower, TarBuilder().add("nothing/here/.wh.x").add("etc/.wh.nope"))
    assert not (lower / "nothing").exists()
    assert sorted(os.listdir(lower / "etc")) == ["group", "passwd"]


def test_opaque_directory_hides_lower_content(lower: Path) -> None:
    b = TarBuilder()
    b.add("opt/", tarfile.DIRTYPE)
    b.add("opt/.wh..wh..opq")
    b.add("opt/new", data=b"n")
    b.add("opt/app/bin/run2", data=b"r")
    _apply(lower, b)
    assert sorted(os.listdir(lower / "opt")) == ["app", "new"]
    assert sorted(os.listdir(lower / "opt/app")) == ["bin"]
    assert sorted(os.listdir(lower / "opt/app/bin")) == ["run2"]
    assert not (lower / "opt/.wh..wh..opq").exists()


def test_opaque_marker_after_the_entries_keeps_them(lower: Path) -> None:
    b = TarBuilder()
    b.add("opt/", tarfile.DIRTYPE)
    b.add("opt/new", data=b"n")
    b.add("opt/app/", tarfile.DIRTYPE)
    b.add("opt/.wh..wh..opq")
    _apply(lower, b)
    assert sorted(os.listdir(lower / "opt")) == ["app", "new"]
    assert os.listdir(lower / "opt/app") == []
    assert (lower / "etc/passwd").exists()


def test_whiteout_files_are_never_written(lower: Path) -> None:
    _apply(lower, TarBuilder().add("etc/.wh.group").add("x/.wh..wh..opq").add(".wh..wh.plnk/", tarfile.DIRTYPE))
    found = [name for _, dirs, files in os.walk(lower) for name in dirs + files if name.startswith(".wh.")]
    assert found == []


def test_whiteout_through_a_symlinked_parent_stays_inside(lower: Path) -> None:
    outside = lower.parent / "outside"
    os.symlink(outside, lower / "escape")
    inside = lower / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "keep").write_text("inside")
    _apply(lower, TarBuilder().add("escape/.wh.keep"))
    assert outside_untouched(lower)
    assert not (inside / "keep").exists()  # the layer's own copy of the path is deleted


def test_whiteout_through_a_relative_symlink(lower: Path) -> None:
    (lower / "usr" / "lib").mkdir(parents=True)
    (lower / "usr" / "lib" / "old").write_text("old")
    os.symlink("usr/lib", lower / "lib")
    _apply(lower, TarBuilder().add("lib/.wh.old"))
    assert os.readlink(lower / "lib") == "usr/lib"
    assert not (lower / "usr/lib/old").exists()


def test_opaque_through_a_symlinked_parent_stays_inside(lower: Path) -> None:
    os.symlink(lower.parent / "outside", lower / "escape")
    _apply(lower, TarBuilder().add("escape/.wh..wh..opq"))
    assert outside_untouched(lower)


def test_opaque_directory_later_replaced_by_symlink_does_not_prune_outside(layer: Path) -> None:
    b = TarBuilder()
    b.add("d/", tarfile.DIRTYPE)
    b.add("d/.wh..wh..opq")
    b.add("d", tarfile.SYMTYPE, linkname=str(layer.parent / "outside"))
    apply_tar(io.BytesIO(b.bytes()), layer)
    assert os.path.islink(layer / "d")
    assert outside_untouched(layer)
