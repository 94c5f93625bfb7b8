"""The ``--layerstore-option KEY=VALUE`` values of a pytest run, as a dict."""

from __future__ import annotations

import pytest

__all__ = ["command_line_options"]


def command_line_options(config: pytest.Config) -> dict[str, str]:
    """Parse every ``--layerstore-option``; a value without ``=`` stops the run with a usage error."""
    options = {}
    for raw in config.getoption("--layerstore-option", None) or []:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--layerstore-option {raw!r}: expected KEY=VALUE")
        options[key.strip()] = value
    return options
