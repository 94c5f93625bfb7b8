"""Pull and push against Debian's docker-registry, checked with skopeo and umoci (never only with our own reader)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from images_helpers import TAG, assert_json_schema, run, skopeo_config, skopeo_inspect, snapshot, tool, unpack
from registry_fixtures import (
    REPO,
    FlakyProxy,
    assert_empty,
    blob_file,
    cli,
    insecure,
    plain_registry,
    push_with_skopeo,
    pushed,
    secure_options,
    secure_registry,
)

from layerstore.errors import AuthenticationFailed, DigestMismatch, ImageNotFound, LimitExceeded, RegistryError
from layerstore.images import Descriptor, ImageStore, TransferProgress, parse_reference
from layerstore.images.layers import layer_blobs
from layerstore.registry import RegistryClient
from layerstore.registry.blobs import BlobReader
from layerstore.registry.transfer import pull, push
from layerstore.testing.registry import LocalRegistry, skopeo

__all__ = ["cli", "plain_registry", "pushed", "secure_registry"]  # fixtures used by name


def _layer_digests(layout: Path, tag: str) -> list[str]:
    manifest = json.loads(run(tool("skopeo"), "inspect", "--raw", f"oci:{layout}:{tag}"))
    return [layer["digest"] for layer in manifest["layers"]]


def test_pull_equals_skopeo_and_umoci(store: ImageStore, pushed: str, images: dict[str, Path],
                                      scratch: Path) -> None:
    result = pull(store, pushed, options=insecure())
    image = result.image
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{pushed}"))
    assert image.manifest_digest == remote["Digest"]
    assert image.digest == skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    diff_ids = skopeo_config(f"oci:{images['umoci']}:{TAG}")["rootfs"]["diff_ids"]
    assert [store.graph.get_digest(layer) for layer in image.layers] == diff_ids
    # Byte-exact: each layer exports as the uncompressed tar that came in.
    for layer, diff_id in zip(image.layers, diff_ids, strict=True):
        with store.graph.tar_layer(layer) as tar:
            digest = hashlib.sha256()
            while block := tar.read(1 << 20):
                digest.update(block)
        assert "sha256:" + digest.hexdigest() == diff_id
    assert list(image.names) == [pushed]
    assert (result.layers_fetched, result.layers_reused) == (2, 0)
    top = image.top_layer
    assert top is not None
    mounted = Path(store.graph.driver.get(top))
    try:
        assert snapshot(mounted) == snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    finally:
        store.graph.driver.put(top)

    again = pull(store, pushed, options=insecure())
    assert (again.layers_fetched, again.layers_reused, again.bytes) == (0, 2, 0)
    assert again.image.id == image.id
    assert len(store.graph.ids()) == 2


def test_a_pull_of_an_unchanged_image_fetches_no_manifest(store: ImageStore, pushed: str,
                                                          plain_registry: LocalRegistry) -> None:
    """As `docker pull`: a `HEAD` finds that the tag names the stored image; no `GET` of a manifest, which
    registries count as a pull (Docker Hub's rate limits), and no blob."""
    first = pull(store, pushed, options=insecure())
    repository = pushed.split("/", 1)[1].rsplit(":", 1)[0]
    mark = len(plain_registry.access_log())
    again = pull(store, pushed, options=insecure())
    fetched = [(method, path) for method, path, _ in _since(plain_registry, mark) if path != "/v2/"]
    assert fetched == [("HEAD", f"/v2/{repository}/manifests/{TAG}")]
    assert again.image.id == first.image.id and again.image.names == (pushed,)
    assert (again.layers_fetched, again.layers_reused, again.bytes) == (0, 2, 0)

    # The tag moves on the registry (the same image as a Docker schema 2 manifest): fetched and loaded.
    _copy(f"docker://{pushed}", f"docker://{pushed}", "--format", "v2s2")
    mark = len(plain_registry.access_log())
    moved = pull(store, pushed, options=insecure())
    methods = {(method, "/manifests/" in path) for method, path, _ in _since(plain_registry, mark)}
    assert ("GET", True) in methods
    assert moved.image.id == first.image.id and (moved.layers_fetched, moved.layers_reused) == (0, 2)


def test_pull_by_digest(store: ImageStore, pushed: str) -> None:
    digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{pushed}"))["Digest"]
    repository = pushed.rsplit(":", 1)[0]
    image = pull(store, f"{repository}@{digest}", options=insecure()).image
    # The name pulled is kept (as podman keeps it) and names the image from then on.
    assert image.manifest_digest == digest and image.names == (f"{repository}@{digest}",)
    assert store.get(f"{repository}@{digest}").id == image.id
    # The image knows where its blobs came from: all three mount elsewhere.
    assert image.config_locations == (repository,)
    copied = push(store, f"{repository}@{digest}", f"{repository.split('/', 1)[0]}/team/by-digest:v1",
                  options=insecure())
    assert (copied.blobs_mounted, copied.blobs_uploaded) == (3, 0)


def test_push_over_tls_with_basic_auth(store: ImageStore, images: dict[str, Path], secure_registry: LocalRegistry,
                                       scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from layerstore.images.archives import open_sources
    from layerstore.registry import Credentials, RegistryOptions, store_credentials

    [source] = open_sources(images["umoci"])
    try:
        image = store.load(source, names=["example.com/team/app:v1"])
    finally:
        source.close()
    # Credentials come from the auth file Podman writes, not from the call.
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(scratch / "auth.json"))
    store_credentials(secure_registry.host, Credentials(secure_registry.username, secure_registry.password))
    options = RegistryOptions(ca_file=str(secure_registry.ca_file), backoff=0.1)
    target = f"{secure_registry.host}/team/pushed:v2"
    first = push(store, image.id, target, options=options)
    assert first.blobs_uploaded == 3  # two gzip layers and the config

    copy = scratch / "copy"
    skopeo("copy", *secure_registry.skopeo_flags("src"), f"docker://{target}", f"oci:{copy}:back")
    raw = run(tool("skopeo"), "inspect", "--raw", f"oci:{copy}:back").encode()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == first.manifest_digest
    assert skopeo_inspect(f"oci:{copy}:back", config=True) == image.digest
    pushed_layers = [b["digest"] for b in json.loads(raw)["layers"]]
    assert pushed_layers == _layer_digests(copy, "back")
    unpacked = unpack(copy, "back", scratch / "unpacked-copy")
    assert snapshot(unpacked) == snapshot(unpack(images["umoci"], TAG, scratch / "unpacked-orig"))

    second = push(store, image.id, target, options=options)
    assert (second.blobs_uploaded, second.bytes) == (0, 0)
    assert second.manifest_digest == first.manifest_digest

    # Another repository of the same registry: the layers and the config are mounted across, not uploaded.
    third = push(store, image.id, f"{secure_registry.host}/team/other:v1", options=options)
    assert (third.blobs_mounted, third.blobs_uploaded, third.bytes) == (3, 0, 0)


def _push_and_read_back(store: ImageStore, image: Any, registry: LocalRegistry, repository: str, compress: str,
                        scratch: Path) -> tuple[Any, list[tuple[str, str, int]]]:
    """Push `image` with `compress`, then check skopeo's copy of it; returns the result and the requests made."""
    mark = len(registry.access_log())
    target = f"{registry.host}/{repository}:v1"
    result = push(store, image.id, target, options=insecure(), compress=compress)
    requests = _since(registry, mark)
    copy = scratch / f"copy-{repository.replace('/', '-')}"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{copy}:x")
    assert skopeo_inspect(f"oci:{copy}:x", config=True) == image.digest
    if compress == "none":
        layers = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))["layers"]
        assert [d["digest"] for d in layers] == [store.graph.get_digest(layer) for layer in image.layers]
    return result, requests


def test_push_zstd_and_uncompressed(store: ImageStore, pushed: str, plain_registry: LocalRegistry,
                                    scratch: Path) -> None:
    image = pull(store, pushed, options=insecure()).image
    for compress in ("zstd", "none"):
        _push_and_read_back(store, image, plain_registry, f"test/{compress}", compress, scratch)


def _since(registry: LocalRegistry, mark: int) -> list[tuple[str, str, int]]:
    return registry.access_log()[mark:]


def _uploads(requests: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The requests that carry blob data (PATCH, or a PUT that closes an upload) or open a plain upload."""
    return [r for r in requests if r[0] == "PATCH" or (r[0] == "PUT" and "/blobs/uploads/" in r[1])
            or (r[0] == "POST" and "mount=" not in r[1])]


def test_push_mounts_pulled_layers_across_repositories(store: ImageStore, pushed: str,
                                                       plain_registry: LocalRegistry, scratch: Path) -> None:
    host = plain_registry.host
    image = pull(store, pushed, options=insecure()).image
    source = f"{host}/{REPO}"
    blobs = [layer_blobs(store.graph, layer) for layer in image.layers]
    assert [[b.locations for b in layer] for layer in blobs] == [[(source,)], [(source,)]]

    mark = len(plain_registry.access_log())
    target = f"{host}/team/copy:v1"
    first = push(store, image.id, target, options=insecure())
    requests = _since(plain_registry, mark)
    # Two layers and the config mounted from where they were pulled: no byte of a blob uploaded.
    assert (first.blobs_mounted, first.blobs_uploaded, first.bytes) == (3, 0, 0)
    assert _uploads(requests) == []
    mounts = [r for r in requests if r[0] == "POST"]
    assert len(mounts) == 3 and all(f"from={quote(REPO, safe='')}" in r[1] and r[2] == 201 for r in mounts)
    assert [r[:2] for r in requests if r[0] == "PUT"] == [("PUT", "/v2/team/copy/manifests/v1")]
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{pushed}"))
    copied = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert copied["Layers"] == remote["Layers"]
    assert copied["Digest"] == first.manifest_digest == image.manifest_digest
    copy = scratch / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{copy}:x")
    assert skopeo_inspect(f"oci:{copy}:x", config=True) == image.digest
    assert [[b.locations for b in layer_blobs(store.graph, layer)] for layer in image.layers] == \
        [[(source, f"{host}/team/copy")]] * 2
    assert store.get(image.id).config_locations == (source, f"{host}/team/copy")

    # The same place again: HEADs only, then the manifest.
    mark = len(plain_registry.access_log())
    second = push(store, image.id, target, options=insecure())
    requests = _since(plain_registry, mark)
    assert (second.blobs_present, second.blobs_mounted, second.blobs_uploaded) == (3, 0, 0)
    assert [r[0] for r in requests if r[0] not in ("HEAD", "GET")] == ["PUT"]

    # A layer reused by a pull from a third repository learns that location too.
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{pushed}",
           f"docker://{host}/mirror/app:v1")
    assert pull(store, f"{host}/mirror/app:v1", options=insecure()).layers_reused == 2
    assert all(f"{host}/mirror/app" in layer_blobs(store.graph, layer)[0].locations for layer in image.layers)


def test_a_declined_mount_falls_back_to_upload(store: ImageStore, pushed: str, plain_registry: LocalRegistry,
                                               scratch: Path) -> None:
    image = pull(store, pushed, options=insecure()).image
    top_blob = layer_blobs(store.graph, image.layers[1])[0].digest
    # The source repository forgets the top layer: the registry cannot mount it from there.
    link = plain_registry.storage / "docker/registry/v2/repositories" / REPO / "_layers" / top_blob.replace(":", "/")
    shutil.rmtree(link)
    mark = len(plain_registry.access_log())
    target = f"{plain_registry.host}/team/fallback:v1"
    result = push(store, image.id, target, options=insecure())
    requests = _since(plain_registry, mark)
    assert (result.blobs_mounted, result.blobs_uploaded) == (2, 1)
    declined = [r for r in requests if r[0] == "POST" and r[2] == 202]
    assert len(declined) == 1 and f"mount={quote(top_blob, safe='')}" in declined[0][1]
    # The upload goes into the session the declined mount opened: no plain POST, no DELETE.
    assert [r[0] for r in _uploads(requests)] == ["PATCH", "PUT"]
    assert not [r for r in requests if r[0] == "DELETE"]
    copy = scratch / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{copy}:x")
    assert skopeo_inspect(f"oci:{copy}:x", config=True) == image.digest
    assert _layer_digests(copy, "x")[0] == layer_blobs(store.graph, image.layers[0])[0].digest


# -- bad cases: one-line errors, nothing left in the store ------------------------------------------------------


def test_unknown_repository_and_tag(store: ImageStore, pushed: str, plain_registry: LocalRegistry) -> None:
    with pytest.raises(ImageNotFound, match="not on the registry"):
        pull(store, f"{plain_registry.host}/nobody/here:v1", options=insecure())
    with pytest.raises(ImageNotFound, match=":nosuchtag"):
        pull(store, f"{plain_registry.host}/{REPO}:nosuchtag", options=insecure())
    assert_empty(store)


def test_wrong_password_and_no_login(store: ImageStore, images: dict[str, Path],
                                     secure_registry: LocalRegistry) -> None:
    reference = push_with_skopeo(images["umoci"], secure_registry)
    with pytest.raises(AuthenticationFailed, match="refused the user name or password"):
        pull(store, reference, options=secure_options(secure_registry, password="wrong"))
    from layerstore.registry import RegistryOptions

    with pytest.raises(AuthenticationFailed, match="layerstore login"):
        pull(store, reference, options=RegistryOptions(ca_file=str(secure_registry.ca_file)))
    assert_empty(store)
    assert pull(store, reference, options=secure_options(secure_registry)).layers_fetched == 2


def test_tls_is_verified(store: ImageStore, images: dict[str, Path], secure_registry: LocalRegistry) -> None:
    from layerstore.registry import Credentials, RegistryOptions

    reference = push_with_skopeo(images["umoci"], secure_registry)
    credentials = Credentials(secure_registry.username, secure_registry.password)
    with pytest.raises(RegistryError, match="not trusted; pass --ca-file"):
        pull(store, reference, options=RegistryOptions(credentials=credentials))
    assert_empty(store)
    # --insecure accepts the unverified certificate.
    assert pull(store, reference, options=RegistryOptions(credentials=credentials, insecure=True)).image


def test_plain_http_needs_insecure(store: ImageStore, pushed: str) -> None:
    from layerstore.registry import RegistryOptions

    with pytest.raises(RegistryError, match=r"plain HTTP.*--insecure"):
        pull(store, pushed, options=RegistryOptions())
    assert_empty(store)


def test_pooled_connections_stay_usable(plain_registry: LocalRegistry) -> None:
    # The scheme probe and the authentication GET /v2/ return their connections to the pool; a streamed
    # body is sent only once (no retry), so a connection left with an unread response would fail it.
    with RegistryClient(plain_registry.host, insecure(retries=0)) as client:
        client.authenticate("repository:probe/pool:push")
        response = client.request("POST", "/v2/probe/pool/blobs/uploads/", scope="repository:probe/pool:push",
                                  body=io.BytesIO(b""), headers={"Content-Length": "0"})
        assert response.status == 202, response.status
        response.drain_conn()
        response.release_conn()


def test_registry_down(store: ImageStore, pushed: str, plain_registry: LocalRegistry) -> None:
    plain_registry.stop()
    with pytest.raises(RegistryError, match="unreachable"):
        pull(store, pushed, options=insecure(retries=1))
    assert_empty(store)


def test_corrupt_blob(store: ImageStore, pushed: str, plain_registry: LocalRegistry) -> None:
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed}"))
    digest = manifest["layers"][1]["digest"]
    data = blob_file(plain_registry, digest)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(content))
    with pytest.raises(DigestMismatch, match=digest) as info:
        pull(store, pushed, options=insecure())
    assert "\n" not in str(info.value)
    assert_empty(store)


def test_server_errors_are_retried(store: ImageStore, pushed: str, plain_registry: LocalRegistry) -> None:
    path = pushed.split("/", 1)[1]
    with FlakyProxy(plain_registry, failures=3) as proxy:
        # Three 503s on blob downloads, six retries allowed: the pull goes through.
        result = pull(store, f"{proxy.host}/{path}", options=insecure(retries=6))
        assert proxy.served_503 == 3 and result.layers_fetched == 2
    store.remove(result.image.id)
    assert_empty(store)
    with FlakyProxy(plain_registry, failures=100) as proxy:
        with pytest.raises(RegistryError, match="HTTP 503") as info:
            pull(store, f"{proxy.host}/{path}", options=insecure(retries=2))
        assert "\n" not in str(info.value)
    assert_empty(store)


def test_manifest_too_large(store: ImageStore, pushed: str) -> None:
    with pytest.raises(LimitExceeded, match=r"limit of 100"):
        pull(store, pushed, options=insecure(), max_manifest_size=100)
    assert_empty(store)


# -- faults: the registry dies mid-transfer ---------------------------------------------------------------------


@pytest.fixture
def big_image(scratch: Path, plain_registry: LocalRegistry) -> tuple[str, Descriptor]:
    """An image (made by umoci) with one 48 MiB incompressible layer, pushed by skopeo; reference and layer."""
    layout = scratch / "big"
    bundle = scratch / "big-bundle"
    umoci = tool("umoci")
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:{TAG}")
    run(umoci, "unpack", "--image", f"{layout}:{TAG}", bundle)
    with open(bundle / "rootfs" / "random", "wb") as out:
        for _ in range(48):
            out.write(os.urandom(1 << 20))
    run(umoci, "repack", "--image", f"{layout}:{TAG}", bundle)
    reference = push_with_skopeo(layout, plain_registry, "test/big")
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}"))
    return reference, Descriptor.from_json(manifest["layers"][0])


def test_blob_download_resumes_after_restart(plain_registry: LocalRegistry,
                                             big_image: tuple[str, Descriptor]) -> None:
    reference, layer = big_image
    ref = parse_reference(reference)
    with RegistryClient(ref.registry, insecure()) as client:
        reader = BlobReader(client, ref.repository, layer)
        digest = hashlib.sha256(reader.read(1 << 20))
        plain_registry.kill()
        plain_registry.start()
        size = 1 << 20
        while block := reader.read(1 << 20):
            digest.update(block)
            size += len(block)
        reader.close()
    assert "sha256:" + digest.hexdigest() == layer.digest
    assert size == layer.size
    assert reader.resumes >= 1


class _KillOnce(TransferProgress):
    def __init__(self, registry: LocalRegistry) -> None:
        self.registry = registry
        self.done = False

    def blob_advanced(self, descriptor: Any, nbytes: int) -> None:
        if not self.done:
            self.done = True
            self.registry.kill()
            threading.Timer(0.3, self.registry.start).start()


def test_pull_survives_a_registry_crash(store: ImageStore, plain_registry: LocalRegistry,
                                        big_image: tuple[str, Descriptor]) -> None:
    reference, _ = big_image
    progress = _KillOnce(plain_registry)
    try:
        result = pull(store, reference, options=insecure(), progress=progress)
    except RegistryError:
        assert_empty(store)  # failed cleanly
        plain_registry.start()
        result = pull(store, reference, options=insecure())
    assert progress.done
    assert result.image.layers and len(store.graph.ids()) == 1
    again = pull(store, reference, options=insecure())
    assert (again.layers_fetched, len(store.graph.ids()), len(store.images())) == (0, 1, 1)


# -- the command line -------------------------------------------------------------------------------------------


def test_cli_pull_push_login(cli: Any, pushed: str, secure_registry: LocalRegistry, tmp_path: Path) -> None:
    first = cli("pull", "--insecure", "--json", pushed)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert_json_schema(data)
    assert sorted(data) == sorted(["reference", "id", "manifest_digest", "index_digest", "layers", "layers_fetched",
                                   "layers_reused", "bytes", "seconds"])
    assert (data["layers_fetched"], data["layers_reused"]) == (2, 0)
    assert data["index_digest"] is None
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{pushed}"))
    assert data["manifest_digest"] == remote["Digest"]
    assert [blob["digest"] for layer in data["layers"] for blob in layer["blobs"]] == remote["Layers"]
    assert [layer["added"] for layer in data["layers"]] == [True, True]
    assert all(layer["chain_id"] == "sha256:" + layer["id"] for layer in data["layers"])
    source = pushed.rsplit(":", 1)[0]
    assert [blob["locations"] for layer in data["layers"] for blob in layer["blobs"]] == [[source]] * 2

    quiet = cli("pull", "-q", "--insecure", pushed)
    assert (quiet.returncode, quiet.stdout.strip(), quiet.stderr) == (0, data["id"], "")

    plain = cli("pull", pushed)
    assert plain.returncode == 1
    assert plain.stderr.count("\n") == 1 and "--insecure" in plain.stderr and "Traceback" not in plain.stderr

    ca = str(secure_registry.ca_file)
    wrong = cli("login", secure_registry.host, "-u", secure_registry.username, "--password-stdin", "--ca-file", ca,
                input="not-the-password\n")
    assert wrong.returncode == 1 and "refused" in wrong.stderr and "not-the-password" not in wrong.stderr
    assert not (tmp_path / "auth.json").exists()
    good = cli("login", secure_registry.host, "-u", secure_registry.username, "--password-stdin", "--ca-file", ca,
               input=secure_registry.password + "\n")
    assert good.returncode == 0, good.stderr
    assert secure_registry.password not in good.stdout + good.stderr
    assert oct((tmp_path / "auth.json").stat().st_mode & 0o777) == "0o600"

    target = f"{secure_registry.host}/team/cli:v1"
    pushed_out = cli("push", "--ca-file", ca, "--json", pushed, target)
    assert pushed_out.returncode == 0, pushed_out.stderr
    push_data = json.loads(pushed_out.stdout)
    assert_json_schema(push_data)
    assert (push_data["id"], push_data["blobs_uploaded"]) == (data["id"], 3)
    again = cli("push", "--ca-file", ca, "--json", pushed, target)
    assert json.loads(again.stdout)["blobs_uploaded"] == 0
    assert json.loads(again.stdout)["blobs_present"] == 3
    skopeo_digest = json.loads(skopeo("inspect", *secure_registry.skopeo_flags(), f"docker://{target}"))["Digest"]
    assert skopeo_digest == json.loads(again.stdout)["manifest_digest"]

    assert cli("logout", secure_registry.host).returncode == 0
    refused = cli("pull", "--ca-file", ca, target)
    assert refused.returncode == 1 and "layerstore login" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_cli_errors_are_one_line_and_leave_nothing(cli: Any, pushed: str, plain_registry: LocalRegistry,
                                                   secure_registry: LocalRegistry, images: dict[str, Path],
                                                   tmp_path: Path) -> None:
    host = plain_registry.host
    secure_reference = push_with_skopeo(images["umoci"], secure_registry)
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {secure_registry.host: {
        "auth": base64.b64encode(f"{secure_registry.username}:wrong-password".encode()).decode()}}}))
    corrupt = f"{host}/test/corrupt:v1"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{pushed}", f"docker://{corrupt}")
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{corrupt}"))
    data = blob_file(plain_registry, manifest["layers"][1]["digest"])
    content = bytearray(data.read_bytes())
    content[len(content) // 3] ^= 0xFF
    data.write_bytes(bytes(content))

    cases = [
        (["pull", "--ca-file", str(secure_registry.ca_file), secure_reference], "refused the user name or password"),
        (["pull", "--insecure", f"{host}/nobody/here:v1"], "not on the registry"),
        (["pull", "--insecure", f"{host}/{REPO}:nosuchtag"], ":nosuchtag"),
        (["pull", "--insecure", corrupt], manifest["layers"][1]["digest"]),
        (["pull", pushed], "--insecure"),
        (["pull", "--insecure", "--retries", "1", "127.0.0.1:1/test/app:v1"], "unreachable"),
        (["push", "--insecure", pushed, f"{host}/team/x:v1"], "no image named"),
    ]
    for argv, expected in cases:
        result = cli(*argv)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr and "wrong-password" not in result.stderr
        assert result.stdout == ""
    assert json.loads(cli("images", "--json").stdout) == []
    assert json.loads(cli("ls", "--json").stdout) == []


def test_terminal_progress(cli: Any, pushed: str) -> None:
    first = cli("pull", "--insecure", pushed, tty=True)
    assert first.returncode == 0, first.stderr
    lines = [line.rsplit("\r", 1)[-1] for line in first.stderr.replace("\x1b[K", "").splitlines()]
    layer_lines = [line for line in lines if " in " in line and "/s)" in line]
    assert len(layer_lines) == 2  # one line per layer, with bytes, time and rate
    assert re.match(r"pulled \S+: 2 layers fetched, 0 reused, .* in [0-9.]+ s$", lines[-1]), lines
    again = cli("pull", "--insecure", pushed, tty=True)
    assert "2 layers fetched" not in again.stderr and "0 layers fetched, 2 reused" in again.stderr
    assert again.stderr.count("already there") == 2
    quiet = cli("pull", "-q", "--insecure", pushed, tty=True)
    assert quiet.stderr == "" and quiet.stdout.startswith("sha256:")


def _copy(source: str, target: str, *flags: str) -> None:
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *flags, source, target)


def test_pull_index_docker_manifest_and_zstd(store: ImageStore, images: dict[str, Path],
                                             plain_registry: LocalRegistry, scratch: Path) -> None:
    from test_images_tools import _multi_platform_layout

    from layerstore.images.descriptor import DOCKER_MANIFEST, Platform

    host = plain_registry.host
    expected = snapshot(unpack(images["umoci"], TAG, scratch / "unpacked"))
    # zstd layers (skopeo compresses; first, so that it has no gzip blob on this registry to reuse instead):
    # decompressed on the way into the driver.
    _copy(f"oci:{images['umoci']}:{TAG}", f"docker://{host}/test/zstd:v1", "--dest-compress",
          "--dest-compress-format", "zstd")
    zstd = pull(store, f"{host}/test/zstd:v1", options=insecure()).image
    manifest = json.loads(store.manifest(zstd.id))
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert _mounted(store, zstd) == expected
    assert store.remove(zstd.id) == list(reversed(zstd.layers))

    # Docker schema 2 manifest (gzip layers) of the same image: the same config, the same ID.
    _copy(f"oci:{images['umoci']}:{TAG}", f"docker://{host}/test/v2s2:v1", "--format", "v2s2")
    docker = pull(store, f"{host}/test/v2s2:v1", options=insecure()).image
    assert docker.manifest_media_type == DOCKER_MANIFEST
    assert docker.manifest_digest == json.loads(skopeo("inspect", "--tls-verify=false",
                                                       f"docker://{host}/test/v2s2:v1"))["Digest"]
    assert docker.id == zstd.id and list(docker.diff_ids) == list(zstd.diff_ids)
    assert _mounted(store, docker) == expected

    # A multi-platform index: this machine's platform, or --platform.
    layout, amd, arm = _multi_platform_layout(images, scratch)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "multi"
    (layout / "index.json").write_text(json.dumps(index))
    _copy(f"oci:{layout}:multi", f"docker://{host}/test/multi:v1", "--all")
    raw_index = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/test/multi:v1").encode()
    assert {m["digest"] for m in json.loads(raw_index)["manifests"]} == {amd, arm}
    arm_image = pull(store, f"{host}/test/multi:v1", options=insecure(), platform=Platform.parse("linux/arm64")).image
    assert arm_image.manifest_digest == arm
    assert arm_image.index_digest == "sha256:" + hashlib.sha256(raw_index).hexdigest()
    assert store.config_json(arm_image.id)["architecture"] == "arm64"
    mark = len(plain_registry.access_log())
    assert pull(store, f"{host}/test/multi:v1", options=insecure(),
                platform=Platform.parse("linux/arm64")).image.id == arm_image.id
    assert [m for m, p, _ in _since(plain_registry, mark) if "/manifests/" in p] == ["HEAD"]
    # The amd64 entry is the image stored already (same config): found, nothing fetched.
    amd_pull = pull(store, f"{host}/test/multi:v1", options=insecure(),
                    platform=Platform(os="linux", architecture="amd64"))
    assert amd_pull.image.id == docker.id and amd_pull.layers_fetched == 0
    with pytest.raises(ImageNotFound, match="linux/s390x"):
        pull(store, f"{host}/test/multi:v1", options=insecure(), platform=Platform.parse("linux/s390x"))


def _mounted(store: ImageStore, image: Any) -> dict[str, Any]:
    top = image.top_layer
    mounted = Path(store.graph.driver.get(top))
    try:
        return snapshot(mounted)
    finally:
        store.graph.driver.put(top)


def test_push_big_layer_chunked_and_monolithic(store: ImageStore, plain_registry: LocalRegistry,
                                               big_image: tuple[str, Descriptor], scratch: Path) -> None:
    from layerstore.registry.blobs import CHUNK_SIZE

    reference, _ = big_image
    image = pull(store, reference, options=insecure()).image
    # Compressed on the fly: the digest is known at the end, the bytes go up in chunks.
    result, requests = _push_and_read_back(store, image, plain_registry, "test/chunked", "zstd", scratch)
    assert len([r for r in requests if r[0] == "PATCH"]) >= result.bytes // CHUNK_SIZE >= 5
    writes = [r for r in requests if r[0] in ("POST", "PATCH", "PUT")]
    assert writes[-1][:2] == ("PUT", "/v2/test/chunked/manifests/v1")  # the manifest last
    assert len([r for r in writes if "/manifests/" in r[1]]) == 1
    # Uncompressed: size and digest known, one streamed PUT of the whole tar.
    result, requests = _push_and_read_back(store, image, plain_registry, "test/monolithic", "none", scratch)
    assert [r for r in requests if r[0] == "PATCH"] == [] and result.bytes > 48 << 20
