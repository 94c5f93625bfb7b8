"""The driver contract documents itself: every hook has a docstring and a place in the README."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from layerstore import hookspecs

README = Path(__file__).resolve().parents[1] / "README.md"
SUITE = Path(hookspecs.__file__).resolve().parent / "conformance" / "suite"


def _hook_names() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(hookspecs.DriverSpec, inspect.isfunction)
        if not name.startswith("_")
    )


def _driver_author_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Writing a driver\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if match is None:
        pytest.fail("README.md has no '## Writing a driver' section")
    return match.group(1)


def test_every_design_hook_is_specified() -> None:
    expected = {
        "create", "remove", "get", "put", "exists", "diff", "apply_diff", "diff_size",
        "changes", "status", "metadata", "cleanup", "capabilities", "gc", "orphans", "diff_files",
    }  # fmt: skip
    assert set(_hook_names()) == expected


@pytest.mark.parametrize("name", _hook_names())
def test_hookspec_has_contract_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs.DriverSpec, name))
    assert doc, f"hookspec {name} has no docstring"
    assert len(doc.split()) >= 8, f"hookspec {name}'s docstring does not state a contract"


@pytest.mark.parametrize("name", _hook_names())
def test_hookspec_is_in_readme_driver_section(name: str) -> None:
    assert re.search(rf"`{name}\(", _driver_author_section()), f"hook {name} is missing from README's driver section"


def test_required_hooks_are_hookspecs() -> None:
    assert set(hookspecs.REQUIRED_HOOKS) <= set(_hook_names())


@pytest.mark.parametrize("name", _hook_names())
def test_hookspec_has_a_conformance_test(name: str) -> None:
    """Every hook is exercised by the conformance suite through the facade (in the style of datasette)."""
    suite = "\n".join(path.read_text() for path in sorted(SUITE.glob("*.py")))
    # The facade exposes the capabilities hook as an attribute, read by every capability check.
    call = re.compile(rf"\.{name}\b" if name == "capabilities" else rf"\bdriver\.{name}\(")
    assert call.search(suite), f"hook {name!r} has no test in layerstore.conformance.suite; add one"
