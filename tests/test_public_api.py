"""The public names: error types exported from `layerstore`, `IDMappings.root_pair` as a property."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest

import layerstore
from layerstore import errors
from layerstore.idtools import IDMap, IDMappings


def test_every_error_type_is_exported_from_layerstore() -> None:
    for name in errors.__all__:
        assert getattr(layerstore, name) is getattr(errors, name)
        assert name in layerstore.__all__


def test_root_pair_is_a_property_and_the_old_call_warns() -> None:
    maps = IDMappings(uids=(IDMap(0, 100_000, 65536),), gids=(IDMap(0, 200_000, 65536),))
    assert maps.root_pair == (100_000, 200_000)
    uid, gid = maps.root_pair
    assert (uid, gid) == (100_000, 200_000)
    with pytest.warns(DeprecationWarning, match="root_pair is a property now"):
        assert maps.root_pair() == (100_000, 200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert IDMappings().root_pair == (0, 0)


def test_no_file_cites_the_design_document() -> None:
    """Users cannot see the design document: the project states its rules itself."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(
        ["git", "-C", str(repo), "grep", "-n", "-I", "DESIGN", "--", ".", ":!tests/test_public_api.py"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.stdout == "", f"files cite DESIGN:\n{found.stdout}"
