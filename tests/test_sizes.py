"""`layerstore.sizes.format_size`: sizes for people, SI as ``docker images`` prints them, or binary."""

from __future__ import annotations

import pytest

from layerstore.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("size", "si", "binary"),
    [
        (0, "0 B", "0 B"),
        (999, "999 B", "999 B"),
        (1000, "1 kB", "1000 B"),
        (1024, "1.02 kB", "1.0 KiB"),
        (1_234_567, "1.23 MB", "1.2 MiB"),
        (210_700_000, "211 MB", "200.9 MiB"),
        (10**13, "10 TB", "9.1 TiB"),
        (5 * 10**15, "5e+03 TB", "4547.5 TiB"),  # the largest unit keeps growing
    ],
)
def test_format_size(size: int, si: str, binary: str) -> None:
    assert format_size(size) == si
    assert format_size(size, binary=True) == binary


def test_binary_format_reads_back_close_to_the_size() -> None:
    size = 3 << 29
    assert parse_size(format_size(size, binary=True).replace(" ", "")) == size
