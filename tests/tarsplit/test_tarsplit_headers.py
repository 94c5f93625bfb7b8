"""The recorder's one-match check of a header's numeric fields agrees with the field-by-field rules."""

from __future__ import annotations

import random

import pytest

from layerstore.archive.tarfields import PLAIN_OCTAL
from layerstore.tarsplit import headers
from layerstore.tarsplit.headers import parse_header

# Bytes a numeric field is made of in the wild, and in hostile or broken archives.
_ALPHABET = b"0123456701234567 \x00\x0089+-x\x80\xff"
_NUMBERS = ((100, 8), (108, 8), (116, 8), (124, 12), (136, 12))  # mode uid gid size mtime
_DEVICES = ((329, 8), (337, 8))


def _field(rng: random.Random, width: int, common: bool) -> bytes:
    shape = 0 if common else rng.randrange(4)
    if shape == 0:  # the common shape: zero-padded digits, a NUL (or a space and a NUL)
        digits = "".join(rng.choice("01234567") for _ in range(width - 2))
        return (digits + rng.choice("01234567 ")).encode() + b"\x00"
    if shape == 1:
        return b"\x00" * width
    if shape == 2:  # digits between spaces and NULs, any widths
        inner = "".join(rng.choice("01234567") for _ in range(rng.randrange(width)))
        return (" " * rng.randrange(2) + inner).encode().ljust(width, rng.choice([b" ", b"\x00"]))[:width]
    return bytes(rng.choice(_ALPHABET) for _ in range(width))


def _block(rng: random.Random, magic: bytes) -> bytes:
    block = bytearray(512)
    block[0:5] = b"a/b/c"
    block[156] = rng.choice(b"0125x")
    block[257:265] = magic
    common = rng.random() < 0.6  # a block of the common shape, or of any mix
    fields = _NUMBERS + _DEVICES
    for start, width in fields:
        block[start : start + width] = _field(rng, width, common)
    if common and rng.random() < 0.5:  # a near miss: one byte of one field changed
        start, width = rng.choice(fields)
        block[start + rng.randrange(width)] = rng.choice(_ALPHABET)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _outcome(block: bytes) -> tuple[int, bytes, int] | str:
    try:
        header = parse_header(block)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return (header.typeflag, header.name, header.size)


@pytest.mark.parametrize("magic", [b"ustar\x0000", b"ustar  \x00", b"\x00" * 8], ids=["ustar", "gnu", "v7"])
def test_one_match_agrees_with_the_field_checks(magic: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261207)
    blocks = [_block(rng, magic) for _ in range(3000)]
    fast = [_outcome(b) for b in blocks]
    hits = sum(headers._COMMON_NUMBERS(b, 100, 148) is not None for b in blocks)
    assert 500 < hits < 3000  # both paths are taken
    for block in blocks:
        if headers._COMMON_NUMBERS(block, 100, 148):
            assert all(PLAIN_OCTAL.fullmatch(block, s, s + w) for s, w in _NUMBERS)
        if headers._COMMON_DEVICES(block, 329, 345):
            assert all(PLAIN_OCTAL.fullmatch(block, s, s + w) for s, w in _DEVICES)
    monkeypatch.setattr(headers, "_COMMON_NUMBERS", lambda *args: None)
    monkeypatch.setattr(headers, "_COMMON_DEVICES", lambda *args: None)
    assert [_outcome(b) for b in blocks] == fast
