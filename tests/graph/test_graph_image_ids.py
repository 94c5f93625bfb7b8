"""Image JSON (Docker v1 names, unknown fields kept), ID rules and unique-prefix lookup."""

from __future__ import annotations

import json

import pytest

import layerstore.image as image_mod
from layerstore.errors import AmbiguousID, CorruptMetadata, ImageNotFound, InvalidID
from layerstore.image import Image, format_created, generate_id, validate_id
from layerstore.truncindex import TruncIndex

DOCKER_JSON = {
    "id": "a" * 64,
    "parent": "b" * 64,
    "comment": "made by hand",
    "created": "2015-06-08T16:34:57.123456789Z",
    "container": "c" * 64,
    "container_config": {"Hostname": "x", "Cmd": ["/bin/sh", "-c", "#(nop) ADD file"], "Env": None},
    "docker_version": "1.7.0",
    "author": "someone",
    "config": {"Cmd": ["/bin/bash"], "Labels": {"a": "b"}},
    "architecture": "amd64",
    "os": "linux",
    "Size": 12345,
    "parent_id": "sha256:" + "d" * 64,
    "x_unknown": {"nested": [1, 2.5, None, True], "text": "é"},
}


def test_round_trip_keeps_every_field_and_docker_names() -> None:
    raw = json.dumps(DOCKER_JSON).encode()
    image = Image.from_json(raw)
    assert image.id == "a" * 64
    assert image.parent == "b" * 64
    assert image.size == 12345
    assert image.docker_version == "1.7.0"
    assert image.container_config == DOCKER_JSON["container_config"]
    assert image.extra == {"parent_id": DOCKER_JSON["parent_id"], "x_unknown": DOCKER_JSON["x_unknown"]}
    again = json.loads(image.to_json())
    assert again == DOCKER_JSON
    # Docker's key order for the known fields, unknown ones after them.
    assert list(again)[:12] == list(DOCKER_JSON)[:12]


def test_created_keeps_nanoseconds_and_parses() -> None:
    image = Image.from_json(json.dumps(DOCKER_JSON))
    assert image.created == "2015-06-08T16:34:57.123456789Z"
    assert image.created_at.isoformat() == "2015-06-08T16:34:57.123456+00:00"
    assert format_created(1_433_781_297_123_456_789) == "2015-06-08T16:34:57.123456789Z"
    assert format_created(1_433_781_297_100_000_000) == "2015-06-08T16:34:57.1Z"
    assert format_created(1_433_781_297_000_000_000) == "2015-06-08T16:34:57Z"


def test_minimal_json_omits_empty_fields() -> None:
    image = Image(id="e" * 64, created="2020-01-01T00:00:00Z")
    assert json.loads(image.to_json()) == {"id": "e" * 64, "created": "2020-01-01T00:00:00Z", "Size": 0}


@pytest.mark.parametrize(
    "bad",
    [b"not json", b"[]", json.dumps({**DOCKER_JSON, "id": "xyz"}).encode(),
     json.dumps({**DOCKER_JSON, "Size": "big"}).encode(), json.dumps({**DOCKER_JSON, "created": "yesterday"}).encode()],
)
def test_bad_json_is_corrupt_metadata_naming_the_source(bad: bytes) -> None:
    with pytest.raises(CorruptMetadata, match="/some/json"):
        Image.from_json(bad, source="/some/json")


def test_generate_id_is_64_lowercase_hex_and_random() -> None:
    ids = {generate_id() for _ in range(500)}
    assert len(ids) == 500
    for ident in ids:
        assert len(ident) == 64
        assert set(ident) <= set("0123456789abcdef")
        assert validate_id(ident) == ident
        assert not ident[:12].isdigit()


def test_generate_id_draws_again_when_short_id_is_all_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["1" * 64, "123456789012" + "a" * 52, "0" * 11 + "f" * 53])
    monkeypatch.setattr(image_mod.os, "urandom", lambda n: bytes.fromhex(next(draws)))
    assert generate_id() == "0" * 11 + "f" * 53


@pytest.mark.parametrize("bad", ["", "A" * 64, "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, "a" * 63 + "\n"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(InvalidID, match="64 lowercase hexadecimal"):
        validate_id(bad)


def test_image_refuses_bad_ids() -> None:
    with pytest.raises(InvalidID):
        Image(id="nope")
    with pytest.raises(InvalidID):
        Image(id="a" * 64, parent="short")
    with pytest.raises(InvalidID, match="own parent"):
        Image(id="a" * 64, parent="a" * 64)


def test_truncindex_unique_prefix_finds_the_id() -> None:
    a, b, c = "abc" + "0" * 61, "abd" + "1" * 61, "f" * 64
    index = TruncIndex([a, b, c])
    assert index.get("abc") == a
    assert index.get("abd1") == b
    assert index.get("f") == c
    assert index.get(a) == a
    assert len(index) == 3 and a in index


def test_truncindex_ambiguous_names_the_candidates() -> None:
    a, b = "abc" + "0" * 61, "abd" + "1" * 61
    index = TruncIndex([a, b])
    with pytest.raises(AmbiguousID) as info:
        index.get("ab")
    assert a in str(info.value) and b in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "ab c", " ", "abc\t"])
def test_truncindex_rejects_empty_and_spaces(bad: str) -> None:
    index = TruncIndex(["a" * 64])
    with pytest.raises(InvalidID):
        index.get(bad)
    with pytest.raises(InvalidID):
        index.add(bad)


def test_truncindex_not_found_and_delete() -> None:
    index = TruncIndex(["a" * 64, "b" * 64])
    with pytest.raises(ImageNotFound):
        index.get("c")
    index.delete("a" * 64)
    with pytest.raises(ImageNotFound):
        index.get("a")
    with pytest.raises(ImageNotFound):
        index.delete("a" * 64)
    assert list(index) == ["b" * 64]
