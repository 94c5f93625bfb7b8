"""Image commands on a full filesystem: a load that does not fit fails cleanly, and the tool still frees space.

The images are made by umoci and skopeo; the store lives on a 24 MiB tmpfs
(`small_store`, vfs and overlay).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from layerstore.testing.stress import fill_filesystem

from .conftest import Store, leftovers
from .image_inputs import docker_archive, skopeo_layers, umoci_layout


def _docker_archive(work: Path, name: str, layers: list[dict[str, bytes]]) -> Path:
    """A docker-archive named ``example.com/full/<name>:v1`` whose layers hold `layers`, made by umoci and skopeo."""
    return docker_archive(umoci_layout(work, name, layers), work / f"{name}.tar", f"example.com/full/{name}:v1")


def _used(store: Store) -> int:
    st = os.statvfs(store.root.parent)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_load_that_does_not_fit_leaves_nothing(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    work = tmp_path / "inputs"
    work.mkdir()
    small = _docker_archive(work, "small", [{"etc/hostname": b"small\n"}])
    # Two layers of 14 MiB each: the first fits on the 24 MiB filesystem, the second does not.
    big = _docker_archive(work, "big", [{"one": os.urandom(14 << 20)}, {"two": os.urandom(14 << 20)}])
    store.ok("images")
    before = _used(store)
    err = _one_line_error(store.run("load", "-i", big))
    assert "space" in err, err
    assert json.loads(store.ok("images", "--json")) == []
    store.ok("check")
    store.ok("gc")
    assert leftovers(store) == []
    # The first layer may stay, whole, as a layer of its own (a later load would reuse it);
    # once it is removed with the tool, nothing of the load takes space any more.
    for row in json.loads(store.ok("ls", "--json")):  # newest first: children before parents
        store.ok("rm", row["id"])
    store.ok("gc")
    assert _used(store) - before < 1 << 20, (before, _used(store))
    loaded = store.ok("load", "-q", "-i", small).split()[-1]
    assert [row["id"] for row in json.loads(store.ok("images", "--json"))] == [loaded]


def test_image_commands_work_on_a_full_filesystem(small_store: Store, tmp_path: Path) -> None:
    store = small_store
    work = tmp_path / "inputs"
    work.mkdir()
    archive = _docker_archive(work, "app", [{f"f{i}": os.urandom(50_000) for i in range(20)}, {"f0": b"changed\n"}])
    other = _docker_archive(work, "other", [{"other": os.urandom(200_000)}])
    image_id = store.ok("load", "-q", "-i", archive).split()[-1]
    filler = store.root.parent / "filler"
    fill_filesystem(filler)
    try:
        assert image_id in store.ok("images", "--no-trunc")
        store.ok("inspect", image_id)
        out = tmp_path / "saved.tar"
        saved = store.run("save", "-o", out, image_id)  # reads layers (on overlay from diff/: no mount, no copy)
        assert saved.returncode == 0, saved.stderr.decode()
        assert skopeo_layers(out)
        assert "space" in _one_line_error(store.run("load", "-i", other))
        assert [row["id"] for row in json.loads(store.ok("images", "--json"))] == [image_id]
        tagged = store.run("tag", image_id, "example.com/full/more:v1")  # may fit, or fail cleanly
        if tagged.returncode != 0:
            _one_line_error(tagged)
        store.ok("rmi", image_id)  # frees space with the tool
        assert json.loads(store.ok("images", "--json")) == []
        names = json.loads((store.root / "images" / "names.json").read_text())
        assert image_id.removeprefix("sha256:") not in names.values(), names  # written again once space was freed
        store.ok("gc")
    finally:
        subprocess.run(["rm", "-rf", filler], check=True)
    assert json.loads(store.ok("ls", "--json")) == []
    store.ok("check")
