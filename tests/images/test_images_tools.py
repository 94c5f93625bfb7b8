"""Images in and out, checked with independent tools: umoci and skopeo build the inputs, skopeo, umoci and
podman read what layerstore saves."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from images_helpers import NAME, TAG, Podman, run, skopeo_config, skopeo_inspect, snapshot, tool, unpack

from layerstore.errors import DigestMismatch, ImageNotFound
from layerstore.images import ImageStore, Platform, TransferProgress
from layerstore.images.archives import open_destination, open_sources
from layerstore.images.store import StoredImage


def load(store: ImageStore, path: Path) -> StoredImage:
    sources = open_sources(path)
    try:
        assert len(sources) == 1
        return store.load(sources[0], names=[NAME])
    finally:
        for source in sources:
            source.close()


def mounted_snapshot(store: ImageStore, image: StoredImage) -> dict[str, tuple[object, ...]]:
    layer = image.top_layer
    assert layer is not None
    root = Path(store.graph.driver.get(layer))
    try:
        return snapshot(root)
    finally:
        store.graph.driver.put(layer)


@pytest.mark.parametrize("form", ["umoci", "skopeo-oci", "skopeo-docker"])
def test_load_matches_umoci_unpack(form: str, images: dict[str, Path], store: ImageStore, scratch: Path) -> None:
    image = load(store, images[form])
    config = skopeo_config(f"oci:{images['umoci']}:{TAG}")
    assert list(image.diff_ids) == config["rootfs"]["diff_ids"]
    assert len(image.layers) == 2
    for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
        assert store.graph.get_digest(layer) == diff_id
    assert "sha256:" + image.id == skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    assert store.images()[0].names == (NAME,)
    expected = snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    assert mounted_snapshot(store, image) == expected


def test_every_form_is_one_image(images: dict[str, Path], store: ImageStore) -> None:
    first = load(store, images["umoci"])
    layers = set(store.graph.ids())
    for form in ("skopeo-oci", "skopeo-docker"):
        again = load(store, images[form])
        assert again.id == first.id
        assert set(store.graph.ids()) == layers  # every layer reused


@pytest.mark.parametrize(("fmt", "compress"), [("docker-archive", "none"), ("oci", "none"), ("oci-dir", "none"),
                                               ("oci-dir", "gzip"), ("oci", "zstd")])
def test_saved_archives_are_read_by_the_tools(fmt: str, compress: str, images: dict[str, Path],
                                              store: ImageStore, scratch: Path) -> None:
    image = load(store, images["skopeo-docker"])
    out = scratch / f"saved-{fmt}"
    store.save([NAME], open_destination(out, fmt), compress=compress)
    transport = {"docker-archive": f"docker-archive:{out}", "oci": f"oci-archive:{out}:{TAG}",
                 "oci-dir": f"oci:{out}:{TAG}"}[fmt]
    assert skopeo_config(transport)["rootfs"]["diff_ids"] == list(image.diff_ids)
    assert skopeo_inspect(transport)["Digest"].startswith("sha256:")
    if compress == "zstd":
        # Debian's umoci and skopeo predate zstd layers: the zstd program checks each layer instead.
        layout = scratch / "extracted"
        layout.mkdir()
        with tarfile.open(out) as tar:
            tar.extractall(layout, filter="data")
        manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        manifest = json.loads((layout / "blobs/sha256" / manifest_digest.split(":")[1]).read_text())
        for descriptor, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
            blob = layout / "blobs/sha256" / descriptor["digest"].split(":")[1]
            plain = subprocess.run([tool("zstd"), "-dc", blob], capture_output=True, check=True).stdout
            assert "sha256:" + hashlib.sha256(plain).hexdigest() == diff_id
    else:
        run(tool("skopeo"), "copy", transport, f"oci:{scratch / 'copied'}:{TAG}")
    if fmt != "docker-archive" and compress != "zstd":
        layout = out
        if fmt == "oci":
            layout = scratch / "extracted"
            layout.mkdir()
            with tarfile.open(out) as tar:
                tar.extractall(layout, filter="data")
        assert mounted_snapshot(store, image) == snapshot(unpack(layout, TAG, scratch / "unpacked"))
    layers = set(store.graph.ids())
    assert load(store, out).id == image.id
    assert set(store.graph.ids()) == layers


def test_podman_loads_a_saved_docker_archive(images: dict[str, Path], store: ImageStore, scratch: Path,
                                             podman: Podman) -> None:
    image = load(store, images["umoci"])
    out = scratch / "saved.tar"
    store.save([NAME], open_destination(out, "docker-archive"))
    podman("load", "-i", out)
    seen = podman.image(NAME)
    assert seen["Id"] == image.id
    assert seen["RootFS"]["Layers"] == list(image.diff_ids)


def test_podman_round_trip(images: dict[str, Path], store: ImageStore, scratch: Path, podman: Podman) -> None:
    podman("load", "-i", images["skopeo-docker"])
    original = podman.image(NAME)
    podman("save", "-o", scratch / "podman.tar", NAME)
    image = load(store, scratch / "podman.tar")
    out = scratch / "ours.tar"
    store.save([NAME], open_destination(out, "docker-archive"))
    fresh = Podman(scratch / "podman2")
    try:
        fresh("load", "-i", out)
        again = fresh.image(NAME)
    finally:
        fresh.remove_storage()
    assert again["Id"] == original["Id"] == image.id
    assert again["RootFS"]["Layers"] == original["RootFS"]["Layers"] == list(image.diff_ids)


def test_second_save_to_the_same_place_writes_no_layer(images: dict[str, Path], store: ImageStore,
                                                        scratch: Path) -> None:
    image = load(store, images["umoci"])
    out = scratch / "one"
    digests = store.save([image.id], open_destination(out, "oci-dir"), compress="gzip")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digests[0]
    # Our gzip is deterministic: the same layer compresses to the blob recorded the first time.
    again = store.save([image.id], open_destination(scratch / "two", "oci-dir"), compress="gzip")
    assert again == digests


@pytest.mark.parametrize(("fmt", "compress"), [("docker-archive", "none"), ("oci", "gzip"), ("oci-dir", "none")])
def test_a_layer_repeated_in_an_image_is_saved_once(fmt: str, compress: str, images: dict[str, Path],
                                                    store: ImageStore, scratch: Path, podman: Podman) -> None:
    """Two layers with one diff ID (the same change made twice) are one blob in what `save` writes."""
    layout = scratch / "repeated"
    shutil.copytree(images["umoci"], layout)
    change = scratch / "change.tar"
    with tarfile.open(change, "w") as tar:
        info = tarfile.TarInfo("etc/again")
        info.size, info.mtime = 6, 1_600_000_000
        tar.addfile(info, io.BytesIO(b"again\n"))
    for _ in range(2):
        run(tool("umoci"), "raw", "add-layer", "--image", f"{layout}:{TAG}", change)
    image = load(store, layout)
    assert image.diff_ids[-1] == image.diff_ids[-2] and image.layers[-1] != image.layers[-2]
    out = scratch / f"saved-{fmt}"
    store.save([NAME], open_destination(out, fmt), compress=compress)
    if fmt == "oci-dir":
        files = [f"blobs/sha256/{p.name}" for p in (out / "blobs" / "sha256").iterdir()]
    else:
        with tarfile.open(out) as tar:
            files = [m.name for m in tar.getmembers() if m.isfile()]
    assert len(files) == len(set(files)), f"a file written twice: {sorted(files)}"
    if fmt == "docker-archive":  # <hex>.tar layers, <hex>.json config, manifest.json
        blobs = [f for f in files if f != "manifest.json"]
    else:
        blobs = [f for f in files if f.startswith("blobs/")]
    assert len(blobs) == len(set(image.diff_ids)) + 1 + (fmt != "docker-archive")  # + config (+ manifest)
    transport = {"docker-archive": f"docker-archive:{out}", "oci": f"oci-archive:{out}:{TAG}",
                 "oci-dir": f"oci:{out}:{TAG}"}[fmt]
    assert skopeo_config(transport)["rootfs"]["diff_ids"] == list(image.diff_ids)
    if fmt == "docker-archive":
        podman("load", "-i", out)
        assert podman.image(NAME)["RootFS"]["Layers"] == list(image.diff_ids)
    assert load(store, out).id == image.id


def test_failed_save_leaves_nothing(images: dict[str, Path], store: ImageStore, scratch: Path) -> None:
    load(store, images["umoci"])
    destination = open_destination(scratch / "out.tar", "docker-archive")
    with pytest.raises(ImageNotFound, match="missing:tag"):
        store.save([NAME, "missing:tag"], destination)
    assert sorted(p.name for p in scratch.iterdir()) == ["store"]


def test_older_docker_archive_form(images: dict[str, Path], store: ImageStore, scratch: Path) -> None:
    """``repositories`` + ``<id>/json`` + ``<id>/layer.tar`` without manifest.json (skopeo writes both forms;
    GNU tar repacks the archive without the newer one)."""
    unpacked = scratch / "older"
    unpacked.mkdir()
    run("tar", "-xf", images["skopeo-docker"], "-C", unpacked)
    (unpacked / "manifest.json").unlink()
    older = scratch / "older.tar"
    run("tar", "-cf", older, "-C", unpacked, ".")
    [source] = open_sources(older)
    try:
        image = store.load(source)
    finally:
        source.close()
    assert image.names == (NAME,)
    assert list(image.diff_ids) == skopeo_config(f"docker-archive:{images['skopeo-docker']}")["rootfs"]["diff_ids"]
    assert mounted_snapshot(store, image) == snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    out = scratch / "resaved.tar"
    store.save([image.id], open_destination(out, "docker-archive"))
    assert skopeo_config(f"docker-archive:{out}")["rootfs"]["diff_ids"] == list(image.diff_ids)


def _multi_platform_layout(images: dict[str, Path], scratch: Path) -> tuple[Path, str, str]:
    """A layout whose index.json names a nested index of two platforms (umoci makes both images)."""
    umoci = tool("umoci")
    layout = scratch / "multi"
    shutil.copytree(images["umoci"], layout)
    run(umoci, "config", "--image", f"{layout}:{TAG}", "--tag", "arm", "--architecture", "arm64",
        "--config.env", "ARCH=arm64")
    entries = {m["annotations"]["org.opencontainers.image.ref.name"]: m
               for m in json.loads((layout / "index.json").read_text())["manifests"]}
    amd, arm = dict(entries[TAG]), dict(entries["arm"])
    for entry, arch in ((amd, "amd64"), (arm, "arm64")):
        entry.pop("annotations")
        entry["platform"] = {"architecture": arch, "os": "linux"}
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [arm, amd]}).encode()
    digest = "sha256:" + hashlib.sha256(nested).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(nested)
    top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": len(nested),
           "annotations": {"org.opencontainers.image.ref.name": "example.com/team/multi:1"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return layout, amd["digest"], arm["digest"]


def test_multi_platform_index(images: dict[str, Path], store: ImageStore, scratch: Path) -> None:
    layout, amd, arm = _multi_platform_layout(images, scratch)
    [source] = open_sources(layout)
    try:
        native = store.load(source, platform=Platform(os="linux", architecture="amd64"))
        other = store.load(source, platform=Platform.parse("linux/arm64"))
        with pytest.raises(ImageNotFound, match="linux/s390x"):
            store.load(source, platform=Platform.parse("linux/s390x"))
    finally:
        source.close()
    assert native.manifest_digest == amd and other.manifest_digest == arm
    assert native.index_digest == other.index_digest is not None
    assert store.config_json(other.id)["architecture"] == "arm64"
    assert store.resolve("example.com/team/multi:1") in (native.id, other.id)
    assert store.resolve(arm) == other.id
    assert len(store.graph.ids()) == 2  # same layers, two configs
    # rmi keeps layers another image uses, and removes them with the last image.
    assert store.remove(native.id) == []
    assert len(store.graph.ids()) == 2
    assert store.remove(other.id) == list(reversed(other.layers))
    assert store.graph.ids() == [] and store.images() == []


def test_rmi_racing_a_load_that_builds_on_its_layer(images: dict[str, Path], store: ImageStore) -> None:
    """`rmi A` while another process pulls B onto A's top layer: B's new layer can appear after `remove` chose
    the layers to delete.  A goes, the layer B builds on stays, and the removal reports no error."""
    [source] = open_sources(images["skopeo-docker"])
    try:
        image = store.load(source)
    finally:
        source.close()
    bottom, top = image.layers
    graph = store.graph
    delete = graph.delete
    child: list[str] = []

    def delete_after_a_child_appeared(name: str, force: bool = False) -> None:
        if not child:  # the other process registers its layer on `top` just now
            child.append(graph.create(io.BytesIO(_one_file_tar()), parent=top).id)
        delete(name, force)

    graph.delete = delete_after_a_child_appeared  # type: ignore[method-assign]
    try:
        assert store.remove(image.id) == []
    finally:
        del graph.delete
    assert store.images() == []
    assert sorted(graph.ids()) == sorted([bottom, top, child[0]]) and graph.children(top) == child


def test_a_load_whose_reused_layer_is_removed_meanwhile(images: dict[str, Path], store: ImageStore) -> None:
    """A load that found a layer stored (and so reuses it) while a concurrent `rmi` deletes it: a one-line
    error that says so, and nothing of the image stays."""
    def load() -> StoredImage:
        [source] = open_sources(images["skopeo-docker"])
        try:
            return store.load(source)
        finally:
            source.close()

    image = load()
    bottom, top = image.layers
    store.graph.delete(top)
    store.records.delete(image.id)  # only the bottom layer is left, as another image's would be
    graph = store.graph
    register = graph.register

    def register_after_the_bottom_went(layer: Any, data: Any, **options: Any) -> bool:
        if layer.parent == bottom and graph.exists(bottom):
            graph.delete(bottom, force=True)  # the concurrent rmi (this process's retain sessions do not hold it)
        return register(layer, data, **options)

    graph.register = register_after_the_bottom_went  # type: ignore[method-assign]
    try:
        with pytest.raises(ImageNotFound, match=f"layer {bottom[:12]}, which this load builds on, was removed"):
            load()
    finally:
        del graph.register
    assert graph.ids() == [] and store.images() == []
    assert load().id == image.id  # run again: it fetches the layer


def test_a_layer_contradicting_the_config_is_never_visible(images: dict[str, Path], store: ImageStore,
                                                           scratch: Path) -> None:
    """A layer is checked against the config's diff_id before it is visible under its chain ID, so that no
    concurrent load can reuse a layer that the image it came with lied about."""
    from test_images_cli import _diff_ids_disagree

    layout = scratch / "layout"
    shutil.copytree(images["umoci"], layout)
    _diff_ids_disagree(layout)  # the second layer's diff_id is not its content's digest
    graph = store.graph
    register = graph.register
    visible_at_check: list[bool] = []

    def register_watching(layer: Any, data: Any, *, check: Any, **options: Any) -> bool:
        def watched(digest: str) -> None:
            visible_at_check.append(graph.exists(layer.id))
            check(digest)
        return register(layer, data, check=watched, **options)

    graph.register = register_watching  # type: ignore[method-assign]
    [source] = open_sources(layout)
    try:
        with pytest.raises(DigestMismatch, match="diff_ids"):
            store.load(source)
    finally:
        source.close()
        del graph.register
    assert visible_at_check == [False, False]
    assert graph.ids() == [] and store.images() == []


class _OnBlobStarted(TransferProgress):
    """Runs `action(index)` as the load it watches starts its blob number `index` (what another command does
    meanwhile)."""

    def __init__(self, action: Any) -> None:
        self._action = action
        self._count = 0

    def blob_started(self, descriptor: Any, *, reused: bool) -> None:
        self._action(self._count)
        self._count += 1


def test_a_load_reusing_only_stored_layers_never_records_a_removed_one(images: dict[str, Path],
                                                                       store: ImageStore) -> None:
    [source] = open_sources(images["skopeo-docker"])
    try:
        image = store.load(source)
        store.records.delete(image.id)  # the layers stay, as another image's would
        graph = store.graph

        def remove_the_top(index: int) -> None:
            if index == 1:
                graph.delete(image.layers[1], force=True)  # a concurrent rmi of that other image

        with pytest.raises(ImageNotFound, match="was removed meanwhile"):
            store.load(source, progress=_OnBlobStarted(remove_the_top))
    finally:
        source.close()
    assert store.images() == []


def test_a_failed_load_keeps_the_layers_another_image_took_up(images: dict[str, Path], store: ImageStore,
                                                               scratch: Path) -> None:
    """The failing load added the bottom layer; a concurrent load of an image of that layer alone found it
    stored and recorded its image.  The failing load's clean-up must not delete it."""
    from test_images_cli import _diff_ids_disagree

    layout = scratch / "layout"
    shutil.copytree(images["umoci"], layout)
    _diff_ids_disagree(layout)  # the second layer fails its check: the load fails after adding the first
    taken: list[StoredImage] = []

    def load_an_image_of_the_bottom_layer(index: int) -> None:
        if index == 1:
            [bottom] = store.graph.ids()
            archive = scratch / "bottom.tar"
            store.save([bottom], open_destination(archive, "docker-archive"))
            [other] = open_sources(archive)
            try:
                taken.append(store.load(other))
            finally:
                other.close()

    [source] = open_sources(layout)
    try:
        with pytest.raises(DigestMismatch, match="diff_ids"):
            store.load(source, progress=_OnBlobStarted(load_an_image_of_the_bottom_layer))
    finally:
        source.close()
    [image] = taken
    assert store.images() == [store.get(image.id)]
    assert store.graph.ids() == list(image.layers)


def _one_file_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("added-by-the-other-pull")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return out.getvalue()


def _change_a_file_of(store: ImageStore, layer: str) -> str:
    """Flip one byte of the largest regular file the layer's tar holds (same size: only its content differs)."""
    with store.graph.tar_layer(layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        name = max((m for m in tar if m.isfile()), key=lambda m: m.size).name
    root = Path(store.graph.driver.get(layer))
    try:
        path = root / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    finally:
        store.graph.driver.put(layer)
    return name


@pytest.mark.parametrize("fmt", ["docker-archive", "oci", "oci-dir"])
def test_save_of_a_changed_layer_fails_and_writes_nothing(fmt: str, images: dict[str, Path], store: ImageStore,
                                                          scratch: Path) -> None:
    """An uncompressed save counts a stored layer instead of hashing it: the rebuilt tar must still refuse."""
    image = load(store, images["umoci"])
    assert image.top_layer is not None
    name = _change_a_file_of(store, image.top_layer)
    with pytest.raises(DigestMismatch, match=name.split("/")[-1]):
        store.save([NAME], open_destination(scratch / "out", fmt))
    assert sorted(p.name for p in scratch.iterdir()) == ["store"]
