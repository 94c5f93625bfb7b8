"""Unsafe and broken layer tars are refused, leave no layer, and write nothing outside (docs/driver-guide.md)."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import pytest

from layerstore.drivers import Driver
from layerstore.errors import InvalidArchive

from ._support import build_layer, new_id, snapshot
from ._tars import TarBuilder

_CLIMB = "../" * 40  # more than any driver home is deep: from the layer root up to "/"


def _unsafe_tar(case: str, outside: Path, token: str) -> tuple[bytes, list[str]]:
    """The tar of one unsafe `case` and strings of which the error must name one (the bad entry)."""
    escape = f"escape-{token}"
    tar = TarBuilder().dir("fine").file("fine/ok", b"harmless\n")
    if case == "dot-dot":
        tar.file(f"{_CLIMB}{str(outside).lstrip('/')}/{escape}", b"escaped\n")
        bad = [escape]
    elif case == "dot-dot-short":
        tar.file(f"fine/../../{escape}", b"escaped\n")
        bad = [escape]
    elif case == "absolute":
        tar.file(f"{outside}/{escape}", b"escaped\n")
        bad = [escape]
    elif case == "hardlink-outside":
        tar.hardlink(escape, f"{_CLIMB}{str(outside).lstrip('/')}/victim")
        bad = [escape, "victim"]
    elif case == "hardlink-absolute":
        tar.hardlink(escape, f"{outside}/victim")
        bad = [escape, "victim"]
    elif case == "hardlink-missing":
        bad = [escape, "no/such/target"]
        tar.hardlink(bad[0], bad[1])
    elif case == "truncated":
        # Cut inside a file larger than the extraction reads into memory (64 KiB), so that part
        # of it is on disk when the error comes, whichever way the files are created.
        bad = []
        data = tar.file(escape, os.urandom(200_000)).bytes()
        return data[:90_000], bad
    else:
        raise ValueError(case)
    return tar.bytes(), bad


CASES = [
    "dot-dot",
    "dot-dot-short",
    "absolute",
    "hardlink-outside",
    "hardlink-absolute",
    "hardlink-missing",
    "truncated",
]


def _paths_with(root: Path, token: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if token in n]
    return found


class BadInputTests:
    """Refusing unsafe archives."""

    @pytest.mark.parametrize("case", CASES)
    @pytest.mark.parametrize("on_parent", [False, True], ids=["base", "child"])
    def test_unsafe_tar_is_refused(
        self, driver: Driver, layerstore_root: Path, tmp_path: Path, case: str, on_parent: bool
    ) -> None:
        outside = tmp_path / f"outside-{secrets.token_hex(4)}"
        outside.mkdir()
        victim = outside / "victim"
        victim.write_bytes(b"must not change\n")
        token = secrets.token_hex(6)
        data, bad_names = _unsafe_tar(case, outside, token)

        parent = build_layer(driver, tar=TarBuilder().file("base-file", b"base\n").bytes()) if on_parent else None
        before = None
        if parent is not None:
            with driver.mounted(parent) as path:
                before = snapshot(path)
        layer = new_id()
        driver.create(layer, parent)
        raised: Exception | None = None
        try:
            driver.apply_diff(layer, parent, io.BytesIO(data))
        except Exception as exc:  # checked below, after the worse failure: writing outside
            raised = exc

        assert sorted(os.listdir(outside)) == ["victim"], f"the tar wrote outside the layer: {os.listdir(outside)}"
        assert victim.read_bytes() == b"must not change\n", "the tar wrote outside the layer (through a hardlink)"
        assert os.stat(victim).st_nlink == 1, "the tar hardlinked a file outside the layer"
        found = _paths_with(layerstore_root, f"escape-{token}")
        # A path beside the tar's own "fine/ok" is inside (a copy of) the layer
        # root: a leftover of an incomplete removal, not an escape.
        leftovers = [p for p in found if os.path.exists(os.path.join(os.path.dirname(p), "fine", "ok"))]
        escaped = [p for p in found if p not in leftovers]
        assert not escaped, f"the tar wrote outside the layer: {escaped}"
        assert isinstance(raised, InvalidArchive), (
            f"apply_diff of an unsafe tar ({case}) raised {raised!r}, not InvalidArchive"
        )
        message = str(raised)
        assert message and "\n" not in message.strip(), f"the error is not one line: {message!r}"
        if bad_names:
            mentioned = any(n in message for n in bad_names)
            assert mentioned, f"the error does not name the entry ({' or '.join(bad_names)}): {message}"
        assert not driver.exists(layer), "a failed apply_diff left the layer behind"
        assert not leftovers, (
            f"after the failed apply_diff, files of layer {layer} are left under the driver home ({leftovers[0]}): "
            "remove did not delete the layer completely (a leftover, not an escape)"
        )
        if parent is not None:
            with driver.mounted(parent) as path:
                assert snapshot(path) == before, "a failed apply_diff on a child changed its parent"
