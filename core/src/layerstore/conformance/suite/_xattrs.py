"""Large extended attributes come back whole through apply_diff, child layers and diff.

Values of 200 bytes, 4 KiB and 60 KiB (the Linux VFS allows up to 64 KiB)
are applied from a tar, read back from the mounted tree with Debian's
``getfattr`` (an independent reader that asks the size first), copied into
a child, written in the child, and checked in the driver's diffs with
``tarfile``.  A filesystem that answers a too-small read buffer with a
short length instead of ``ERANGE`` (zfs-fuse) makes a naive reader lose all
but a few bytes; these tests catch that.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from layerstore.drivers import Driver

from ._support import new_id
from ._tars import TarBuilder, diff_members

XATTR_SIZES = (200, 4096, 60 * 1024)
"""The value sizes tried, in bytes."""

_NAME = "user.layerstore-big"
_ROOM = (errno.ENOSPC, errno.E2BIG, errno.ERANGE, errno.ENOTSUP, errno.EOPNOTSUPP)


def _value(size: int, seed: str) -> bytes:
    """`size` bytes of printable, position-dependent data (a truncation or shift shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).hexdigest().encode()
        counter += 1
    return bytes(out[:size])


def _getfattr(path: str, name: str) -> bytes:
    """The value of `name` at `path` read by ``getfattr`` (not following symlinks)."""
    if shutil.which("getfattr") is None:
        pytest.fail("getfattr is missing: install the Debian package attr", pytrace=False)
    proc = subprocess.run(
        ["getfattr", "-h", "--absolute-names", "--only-values", "-n", name, path],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, f"getfattr -n {name} {path}: {proc.stderr.decode(errors='replace').strip()}"
    return proc.stdout


def _require_room(root: Path, size: int) -> None:
    """Go on only when the backing filesystem can hold a `size`-byte user xattr at all."""
    fd, scratch = tempfile.mkstemp(prefix=".xattr-probe-", dir=root)
    os.close(fd)
    try:
        os.setxattr(scratch, _NAME, b"x" * size)
    except OSError as exc:
        if exc.errno not in _ROOM:
            raise
        # A limit of the backing filesystem, not of the driver: the driver is still tested.
        pytest.skip(
            f"the filesystem of {root} cannot hold a {size}-byte user xattr ({exc.strerror}); "
            "run the suite on one that can (ext4 with -O ea_inode, btrfs with -n 65536, xfs, zfs)"
        )
    finally:
        os.unlink(scratch)


class XattrTests:
    """Extended attributes up to 60 KiB survive every path through a driver, byte for byte."""

    @pytest.mark.parametrize("size", XATTR_SIZES)
    def test_large_xattrs_round_trip(self, driver: Driver, layerstore_root: Path, size: int) -> None:
        """apply_diff stores them, a child copies them, diff and changes of base and child carry them whole."""
        _require_room(layerstore_root, size)
        on_dir, on_file, in_child = _value(size, "dir"), _value(size, "file"), _value(size, "child")
        tar = TarBuilder().dir("d").file("d/f", b"content\n", xattrs={_NAME: on_file}).dir("d2", xattrs={_NAME: on_dir})
        base, child, copy = new_id(), new_id(), new_id()
        driver.create(base)
        driver.apply_diff(base, None, io.BytesIO(tar.bytes()))

        with driver.mounted(base) as path:
            assert _getfattr(os.path.join(path, "d/f"), _NAME) == on_file, "apply_diff stored a different value"
            assert _getfattr(os.path.join(path, "d2"), _NAME) == on_dir, "apply_diff stored a different value"
        members = {m.name: m for m in diff_members(driver, base, None)}
        assert members["d/f"].xattrs.get(_NAME) == on_file, f"diff of the base lost bytes of a {size}-byte xattr"
        assert members["d2"].xattrs.get(_NAME) == on_dir, f"diff of the base lost bytes of a {size}-byte xattr"

        driver.create(child, base)
        with driver.mounted(child) as path:
            assert _getfattr(os.path.join(path, "d/f"), _NAME) == on_file, "the child's copy differs"
            new = os.path.join(path, "d/g")
            with open(new, "wb") as f:
                f.write(b"new\n")
            os.setxattr(new, _NAME, in_child)
        members = {m.name: m for m in diff_members(driver, child, base)}
        assert members["d/g"].xattrs.get(_NAME) == in_child, f"diff of the child lost bytes of a {size}-byte xattr"
        assert "d/f" not in members, "an unchanged file with a large xattr shows in the child's diff"

        driver.create(copy, base)
        with driver.diff(child, base) as stream:
            driver.apply_diff(copy, base, stream)
        with driver.mounted(copy) as path:
            assert _getfattr(os.path.join(path, "d/g"), _NAME) == in_child, "re-applying the diff changed the value"

