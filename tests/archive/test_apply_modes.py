"""Regular files get exactly the tar's mode and owner, whatever the umask and the parent directory say."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_helpers import TarBuilder

from layerstore.archive.apply import apply_tar


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_umask_does_not_narrow_file_modes(layer: Path, strict_umask: None) -> None:
    tar = TarBuilder().add("etc", tarfile.DIRTYPE, mode=0o755).add("etc/motd", data=b"hi\n", mode=0o644)
    apply_tar(tar.stream(), layer)
    assert os.lstat(layer / "etc/motd").st_mode & 0o7777 == 0o644
    assert os.lstat(layer / "etc").st_mode & 0o7777 == 0o755


def test_setgid_parent_does_not_change_file_group(layer: Path) -> None:
    shared = layer / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4242)
    os.chmod(shared, 0o2775)
    tar = TarBuilder().add("shared/file", data=b"x", mode=0o644, uid=0, gid=0)
    apply_tar(tar.stream(), layer)
    st = os.lstat(shared / "file")
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert st.st_mode & 0o7777 == 0o644


def test_special_bits_and_foreign_owner_are_kept(layer: Path, strict_umask: None) -> None:
    tar = (
        TarBuilder()
        .add("su", data=b"\x7fELF", mode=0o4755, uid=0, gid=0)
        .add("user-file", data=b"u", mode=0o664, uid=1000, gid=1000)
    )
    apply_tar(tar.stream(), layer)
    su, user = os.lstat(layer / "su"), os.lstat(layer / "user-file")
    assert su.st_mode & 0o7777 == 0o4755
    assert (user.st_uid, user.st_gid, user.st_mode & 0o7777) == (1000, 1000, 0o664)
