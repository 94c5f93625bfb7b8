"""Fixtures for the overlay driver's tests: a loop-mounted ext4 for stores, and a check that no mount leaks."""

from __future__ import annotations

import io
import itertools
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import Driver, load_driver
from layerstore.errors import DriverNotSupported
from layerstore.testing import unavailable
from layerstore.testing.loop import LARGE_XATTRS, loop_filesystem_or_unavailable, mounts_under
from layerstore_overlay._mount import unmount

_counter = itertools.count()


def layer_tar(members: dict[str, bytes | str]) -> bytes:
    """A PAX tar of regular files (bytes: the content) and symbolic links (str: the target), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(body, str):
                info.type, info.linkname = tarfile.SYMTYPE, body
                tf.addfile(info)
            else:
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture(scope="session")
def overlay_backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ext4 filesystem (loop-mounted, sparse image) shared by the session's stores.

    The root filesystem is slow at creating files; a loop-mounted ext4 is not.
    """
    workdir = tmp_path_factory.mktemp("overlay-backing")
    with loop_filesystem_or_unavailable("overlay", workdir, "ext4", 1024, LARGE_XATTRS["ext4"]) as mnt:
        yield mnt


@pytest.fixture
def store_root(overlay_backing: Path) -> Iterator[Path]:
    """A fresh directory on the backing ext4; the test fails if it leaves a mount below it."""
    root = overlay_backing / f"t{next(_counter)}"
    root.mkdir()
    yield root
    leaked = mounts_under(root)
    for mount_point in sorted(leaked, key=len, reverse=True):
        unmount(mount_point)
    if leaked:
        pytest.fail(f"mounts left behind under {root}: {', '.join(leaked)}")


OpenOverlay = Callable[..., Driver]


def _open_overlay(home: Path, options: dict[str, str] | None = None) -> Driver:
    try:
        return load_driver("overlay", home, options)
    except DriverNotSupported as exc:
        unavailable("overlay", str(exc))


@pytest.fixture
def open_overlay() -> OpenOverlay:
    """``open_overlay(home, options=None)``: load the installed overlay driver, or report it unavailable here."""
    return _open_overlay


@pytest.fixture
def driver(store_root: Path) -> Iterator[Driver]:
    """An overlay driver on a fresh home; cleaned up (every reference put) afterwards."""
    drv = _open_overlay(store_root / "home")
    yield drv
    drv.cleanup()
