"""`layerstore.testing.loop`: loop-mounted filesystems are torn down whatever happens in the body."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerstore.errors import CommandFailed
from layerstore.testing.loop import (
    loop_devices_under,
    loop_filesystem,
    loop_filesystem_or_unavailable,
    loop_support_problem,
    mounts_under,
)


@pytest.fixture(autouse=True)
def _needs_loop_devices() -> None:
    problem = loop_support_problem("btrfs")
    if problem is not None:
        from layerstore.testing import unavailable

        unavailable("btrfs", problem)


def fs_type_of(path: Path) -> str:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                return fields[fields.index("-") + 1]
    return ""


def test_mounts_a_fresh_filesystem_and_tears_it_down_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), loop_filesystem(tmp_path, "btrfs", 128) as mnt:
        assert mnt == tmp_path / "mnt"
        assert fs_type_of(mnt) == "btrfs"
        assert len(loop_devices_under(tmp_path)) == 1
        (mnt / "file").write_bytes(b"data")
        raise RuntimeError("boom")
    assert mounts_under(tmp_path) == []
    assert loop_devices_under(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["mnt"]  # the image is gone


def test_a_busy_mount_is_detached_lazily(tmp_path: Path) -> None:
    cwd = os.getcwd()
    try:
        with loop_filesystem(tmp_path, "ext4", 16, mountpoint=tmp_path / "elsewhere") as mnt:
            assert mnt == tmp_path / "elsewhere"
            assert fs_type_of(mnt) == "ext4"
            os.chdir(mnt)  # keeps the mount busy past the retries
        assert mounts_under(tmp_path) == []
    finally:
        os.chdir(cwd)
    assert loop_devices_under(tmp_path) == []


def test_a_failing_mkfs_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(CommandFailed, match=r"mkfs\.btrfs"),
        loop_filesystem(tmp_path, "btrfs", 128, ["--no-such-flag"]),
    ):
        pytest.fail("the body must not run")
    assert list(tmp_path.iterdir()) == []
    assert loop_devices_under(tmp_path) == []


def test_the_pytest_helper_skips_when_the_filesystem_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LAYERSTORE_REQUIRE_DRIVERS", raising=False)
    with (
        pytest.raises(pytest.skip.Exception, match="cannot make a loop-mounted btrfs filesystem"),
        loop_filesystem_or_unavailable("btrfs", tmp_path, "btrfs", 1),  # too small for mkfs.btrfs
    ):
        pytest.fail("the body must not run")
    monkeypatch.setenv("LAYERSTORE_REQUIRE_DRIVERS", "btrfs")
    with (
        pytest.raises(pytest.fail.Exception, match="required here"),
        loop_filesystem_or_unavailable("btrfs", tmp_path, "btrfs", 1),
    ):
        pytest.fail("the body must not run")
    assert loop_devices_under(tmp_path) == []
