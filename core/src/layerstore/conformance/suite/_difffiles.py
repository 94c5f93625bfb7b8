"""The optional ``diff_files`` hook: a layer's own files, read without a mount (docs/driver-guide.md).

A driver without the hook passes by answering None and holding nothing; a
driver with it must keep its promise for files the layer wrote itself, for
files written through links of its own and of its parent, for files it
replaced and for files it deleted.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from layerstore.archive.inroot import open_in_root
from layerstore.drivers import Driver
from layerstore.errors import LayerInUse

from ._support import build_layer
from ._tars import TarBuilder

_BASE = (
    TarBuilder()
    .file("usr/lib/libc.so", b"libc\n")
    .file("usr/lib/old", b"old\n")
    .symlink("lib", "usr/lib")
    .file("etc/passwd", b"root\n")
    .file("etc/shadow", b"secret\n")
    .bytes()
)
_CHILD = (
    TarBuilder()
    .file("etc/hostname", b"box\n")
    .file("usr/lib/libc.so", b"patched libc\n")
    .dir("srv")
    .file("srv/deep/down/data", b"data\n" * 100)
    .symlink("own", "etc")
    .file("own/through-own-link", b"written through the layer's own link\n")
    .file("lib/through-parent-link", b"written through the parent's link\n")
    .whiteout("etc/shadow")
    .bytes()
)
_MUST_BE_THERE = ("etc/hostname", "usr/lib/libc.so", "srv/deep/down/data", "own/through-own-link")
"""Written by the child on paths of its own: the promise says they are found in diff_files."""


def _regular_file(root: str, rel: str) -> bytes | None:
    """The content of the regular file at `rel` below `root` (links followed inside it), None if there is none."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root_fd, rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.ENODEV):
            return None
        raise
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


class DiffFilesTests:
    """A layer's own files without a mount (the optional ``diff_files`` hook)."""

    def test_diff_files_keep_their_promise(self, driver: Driver) -> None:
        base = build_layer(driver, None, _BASE)
        child = build_layer(driver, base, _CHILD)
        with driver.mounted(child) as mounted:
            shown = {
                rel: _regular_file(mounted, rel)
                for rel in (*_MUST_BE_THERE, "lib/through-parent-link", "etc/passwd", "etc/shadow", "usr/lib/old")
            }
        assert shown["etc/shadow"] is None, "the child's whiteout did not delete etc/shadow"
        assert shown["lib/through-parent-link"] == b"written through the parent's link\n"

        own = driver.diff_files(child)
        if own is None:
            assert driver.references(child) == 0, "diff_files answered None but holds a reference"
            return
        try:
            assert driver.references(child) == 1, "diff_files must hold one reference, as get does"
            with pytest.raises(LayerInUse):
                driver.remove(child)
            for rel, content in shown.items():
                found = _regular_file(own, rel)
                if rel in _MUST_BE_THERE:
                    assert found == content, f"diff_files of the child lacks or changed its own file {rel}"
                elif found is not None:
                    assert found == content, f"diff_files shows a regular file at {rel} that the layer does not"
        finally:
            driver.put(child)
        assert driver.references(child) == 0, "put did not release the reference of diff_files"
        driver.remove(child)
        assert not driver.exists(child)

    def test_diff_files_of_a_missing_layer(self, driver: Driver) -> None:
        from layerstore.errors import LayerNotFound

        with pytest.raises(LayerNotFound):
            driver.diff_files("0" * 64)
