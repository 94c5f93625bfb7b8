"""The image commands end to end, and every bad input of an image archive: one line, nothing left behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from images_helpers import NAME, TAG, assert_json_schema, run, skopeo_inspect, tool

Cli = Callable[..., subprocess.CompletedProcess[bytes]]


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def one_line_error(proc: subprocess.CompletedProcess[bytes], *expected: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerstore: error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def assert_store_empty(cli: Cli, store_root: Path) -> None:
    assert json.loads(ok(cli("images", "--json"))) == []
    assert json.loads(ok(cli("ls", "--json"))) == []
    tmp = store_root / "graph" / "_tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []  # reading commands create no store
    images_dir = store_root / "images"
    if images_dir.exists():
        assert [p.name for p in images_dir.iterdir() if p.name not in (".lock", "names.json")] == []
    vfs_dir = store_root / "vfs" / "dir"
    assert not vfs_dir.exists() or list(vfs_dir.iterdir()) == []


def test_load_images_tag_inspect_mount_rmi(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    cli = layerstore_cli
    assert ok(cli("load", "-i", images["skopeo-docker"])) == f"Loaded image: {NAME}\n"
    rows = json.loads(ok(cli("images", "--json")))
    assert_json_schema(rows)
    image_id = rows[0]["id"]
    assert rows == [{"id": image_id, "name": NAME, "repository": "example.com/team/app", "tag": TAG,
                     "digest": rows[0]["digest"], "created": rows[0]["created"], "size": rows[0]["size"],
                     "layer_count": 2}]
    assert image_id == skopeo_inspect(f"oci:{images['umoci']}:{TAG}", config=True)
    assert ok(cli("images", "-q")) == image_id[7:19] + "\n"
    assert "app" in ok(cli("images"))

    # Loading again from another form (stdin) reuses everything.
    with open(images["umoci"].parent / "skopeo-docker.tar", "rb") as f:
        again = json.loads(ok(cli("load", "--json", input=f.read())))
    assert_json_schema(again)
    assert again[0]["id"] == image_id and [layer["added"] for layer in again[0]["layers"]] == [False, False]

    ok(cli("tag", NAME, "mine"))
    # As `docker load`, a load reports the names the archive gives, not the ones the image had already.
    assert ok(cli("load", "-i", images["skopeo-docker"])) == f"Loaded image: {NAME}\n"
    info = json.loads(ok(cli("inspect", "mine")))
    assert_json_schema(info)
    assert info["id"] == image_id
    assert info["names"] == ["docker.io/library/mine:latest", NAME]
    assert info["config"]["env"] == ["GREETING=hello"]
    assert info["config"]["cmd"] == ["/bin/tool"]
    assert info["config"]["working_dir"] == "/home/user"
    assert len(info["history"]) >= 2
    diff_ids = [layer["diff_id"] for layer in info["layers"]]
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{images['skopeo-docker']}"],
                                       capture_output=True, check=True).stdout)
    assert diff_ids == config["rootfs"]["diff_ids"]

    # Digest lookups: a layer by diff digest or chain ID, an image by its ID digest.
    top = info["layers"][1]["id"]
    assert json.loads(ok(cli("inspect", diff_ids[1])))["id"] == top
    assert ok(cli("digest", info["layers"][1]["chain_id"])).strip() == diff_ids[1]
    assert json.loads(ok(cli("inspect", image_id)))["id"] == image_id

    path = Path(ok(cli("mount", "mine")).strip())
    assert (path / "etc" / "new").read_text() == "added in layer 2\n"
    assert not (path / "usr" / "lib" / "d1").exists()
    one_line_error(cli("rmi", image_id), "mounted")
    ok(cli("umount", "mine"))

    assert ok(cli("untag", "mine")) == "Untagged: docker.io/library/mine:latest\n"
    one_line_error(cli("untag", "mine"), "mine")
    out = ok(cli("rmi", NAME))
    assert out.splitlines()[0] == f"Deleted: {image_id}"
    assert_store_empty(cli, scratch / "store")


def test_save_command_formats(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    cli = layerstore_cli
    ok(cli("load", "-i", images["umoci"]))
    image_id = json.loads(ok(cli("images", "--json")))[0]["id"]
    ok(cli("save", image_id, "-o", scratch / "d.tar"))
    ok(cli("save", image_id, "-o", scratch / "o.tar", "--format", "oci", "--compress", "gzip"))
    ok(cli("save", image_id, "-o", scratch / "dir", "--format", "oci-dir"))
    assert skopeo_inspect(f"docker-archive:{scratch / 'd.tar'}")["Layers"]
    one_line_error(cli("save", "nope", "-o", scratch / "x.tar"), "nope")
    one_line_error(cli("save", image_id, "-o", scratch / "dir", "--format", "oci-dir"), "not an empty directory")
    assert not (scratch / "x.tar").exists()
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("compressor", ["gzip", "bzip2", "xz", "zstd"])
def test_load_of_an_archive_compressed_whole(compressor: str, layerstore_cli: Cli, images: dict[str, Path],
                                             scratch: Path) -> None:
    """`docker save | gzip` (or bzip2, xz, zstd) loads from a file and from standard input, as `docker load` does."""
    cli = layerstore_cli
    plain = images["skopeo-docker"]
    packed = scratch / f"image.tar.{compressor}"
    with open(plain, "rb") as source, open(packed, "wb") as out:
        subprocess.run([tool(compressor), "-c"], stdin=source, stdout=out, check=True)
    assert ok(cli("load", "-i", packed)) == f"Loaded image: {NAME}\n"
    image_id = json.loads(ok(cli("images", "--json")))[0]["id"]
    ok(cli("rmi", NAME))
    assert ok(cli("load", "-q", input=packed.read_bytes())) == f"{image_id}\n"
    assert list((scratch / "store" / "graph" / "_tmp").iterdir()) == []  # the decompressed copies are gone

    cut = scratch / f"cut.tar.{compressor}"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    ok(cli("rmi", NAME))
    one_line_error(cli("load", "-i", cut), str(cut))
    one_line_error(cli("load", input=cut.read_bytes()), "standard input")
    assert_store_empty(cli, scratch / "store")


def test_load_from_standard_input_survives_another_command_starting(layerstore_cli: Cli, images: dict[str, Path],
                                                                    scratch: Path) -> None:
    """`layerstore save A | layerstore load` on one store: the other command's start-up sweep of the store's
    temporary files must not take the spool of standard input from a load in progress."""
    cli = layerstore_cli
    data = images["skopeo-docker"].read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
    env.update(LAYERSTORE_ROOT=str(scratch / "store"), LAYERSTORE_DRIVER="vfs", XDG_CONFIG_HOME=str(scratch / "xdg"))
    ok(cli("info"))  # the store exists, so that the load's spool has its directory at once
    tmp = scratch / "store" / "graph" / "_tmp"
    load = subprocess.Popen([str(Path(sys.executable).parent / "layerstore"), "load"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert load.stdin is not None
    try:
        load.stdin.write(data[:4096])
        load.stdin.flush()
        fd_dir = Path(f"/proc/{load.pid}/fd")

        def spooling() -> bool:
            with contextlib.suppress(OSError):
                return any(str(tmp) in os.readlink(fd) for fd in fd_dir.iterdir())
            return False

        while not spooling():  # until the load holds its spool open in the store's temporary directory
            assert load.poll() is None, load.stderr.read().decode() if load.stderr else "the load ended"
            time.sleep(0.005)
        content = scratch / "content"
        content.mkdir()
        (content / "file").write_text("x\n")
        subprocess.run(["tar", "-cf", scratch / "layer.tar", "-C", content, "file"], check=True)
        ok(cli("import", "-q", scratch / "layer.tar"))  # opens the store for writing: sweeps what is left over
        out, err = load.communicate(input=data[4096:])
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err.decode()
    assert out.decode() == f"Loaded image: {NAME}\n"
    assert list(tmp.iterdir()) == []


def test_save_to_standard_output(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    """Without -o, `save` writes to standard output (a pipe or a redirect), never to a terminal."""
    cli = layerstore_cli
    ok(cli("load", "-i", images["skopeo-docker"]))
    ok(cli("tag", NAME, "alpine:v1"))
    piped = cli("save", NAME, "alpine:v1")
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr.decode()
    ok(cli("save", NAME, "alpine:v1", "-o", scratch / "file.tar"))
    assert piped.stdout == (scratch / "file.tar").read_bytes()
    (scratch / "piped.tar").write_bytes(piped.stdout)
    with tarfile.open(scratch / "piped.tar") as tar:
        entry = tar.extractfile("manifest.json")
        assert entry is not None
        manifest = json.loads(entry.read())
    # One entry for the one image, its names fully qualified (podman reads `alpine:v1` as localhost/alpine).
    assert [e["RepoTags"] for e in manifest] == [[NAME, "docker.io/library/alpine:v1"]]
    one_line_error(cli("save", NAME, "--format", "oci-dir"), "-o DIR")

    import pty

    leader, follower = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
        env.update(LAYERSTORE_ROOT=str(scratch / "store"), LAYERSTORE_DRIVER="vfs")
        on_terminal = subprocess.run([str(Path(sys.executable).parent / "layerstore"), "save", NAME],
                                     stdout=follower, stderr=subprocess.PIPE, env=env, check=False)
    finally:
        os.close(follower)
        os.close(leader)
    assert on_terminal.returncode != 0 and b"terminal" in on_terminal.stderr, on_terminal.stderr.decode()


def test_rmi_of_one_of_several_names_untags(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    """`rmi NAME` of an image with other names removes only that name, as `docker rmi` and `podman rmi` do."""
    cli = layerstore_cli
    ok(cli("load", "-i", images["skopeo-docker"]))
    image_id = json.loads(ok(cli("images", "--json")))[0]["id"]
    ok(cli("tag", NAME, "alpine:v1"))
    assert ok(cli("rmi", "alpine:v1")) == "Untagged: docker.io/library/alpine:v1\n"
    assert [row["name"] for row in json.loads(ok(cli("images", "--json")))] == [NAME]
    ok(cli("tag", NAME, "alpine:v1"))
    assert ok(cli("rmi", image_id)).splitlines()[0] == f"Deleted: {image_id}"  # an ID removes the image
    assert_store_empty(cli, scratch / "store")
    ok(cli("load", "-i", images["skopeo-docker"]))
    assert ok(cli("rmi", NAME)).splitlines()[0] == f"Deleted: {image_id}"  # so does its last name
    assert_store_empty(cli, scratch / "store")


def test_import_refuses_image_archives(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    # Tars of the layout made by GNU tar (a "./" root entry first, then "./"-prefixed names, in directory
    # order; pax headers) and bsdtar (bare names): import looks at the first members only to decide.
    layout = images["umoci"]
    gnu, pax, bsd = scratch / "gnu.tar", scratch / "pax.tar", scratch / "bsd.tar"
    run(tool("tar"), "-C", layout, "-cf", gnu, ".")
    run(tool("tar"), "--format=pax", "-C", layout, "-cf", pax, ".")
    run(tool("bsdtar"), "-C", layout, "-cf", bsd, *sorted(p.name for p in layout.iterdir()))
    for source in (images["skopeo-docker"], layout, gnu, pax, bsd):
        one_line_error(layerstore_cli("import", source), "this is an image archive; use `layerstore load")
    assert_store_empty(layerstore_cli, scratch / "store")


# -- bad inputs --------------------------------------------------------------------------------------------


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def _put_json(layout: Path, value: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(value).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob(layout, digest).write_bytes(data)
    return digest, len(data)


def _rewrite(layout: Path, *, config_edit: Callable[[dict[str, Any]], None] | None = None,
             manifest_edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Edit the config and/or manifest of a layout and re-link the digests (a hand-made bad image)."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads(_blob(layout, entry["digest"]).read_text())
    if config_edit is not None:
        config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text())
        config_edit(config)
        manifest["config"]["digest"], manifest["config"]["size"] = _put_json(layout, config)
    if manifest_edit is not None:
        manifest_edit(manifest)
    entry["digest"], entry["size"] = _put_json(layout, manifest)
    (layout / "index.json").write_text(json.dumps(index))


def _layer(layout: Path, n: int) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    return manifest["layers"][n]  # type: ignore[no-any-return]


def _bad_digest(layout: Path) -> str:
    blob = _blob(layout, _layer(layout, 1)["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    return "as its descriptor states"


def _missing_blob(layout: Path) -> str:
    digest = _layer(layout, 1)["digest"]
    _blob(layout, digest).unlink()
    return f"blob {digest} is missing"


def _diff_ids_disagree(layout: Path) -> str:
    def edit(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"][1] = "sha256:" + "ab" * 32
    _rewrite(layout, config_edit=edit)
    return "diff_ids"


def _unknown_media_type(layout: Path) -> str:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["layers"][1]["mediaType"] = "application/vnd.example.layer+squashfs"
    _rewrite(layout, manifest_edit=edit)
    return "application/vnd.example.layer+squashfs"


@pytest.mark.parametrize("damage", [_bad_digest, _missing_blob, _diff_ids_disagree, _unknown_media_type],
                         ids=["wrong-digest", "missing-blob", "diff-ids-disagree", "unknown-media-type"])
def test_bad_layouts(damage: Callable[[Path], str], layerstore_cli: Cli, images: dict[str, Path],
                     scratch: Path) -> None:
    layout = scratch / "bad"
    shutil.copytree(images["skopeo-oci"], layout)
    expected = damage(layout)
    one_line_error(layerstore_cli("load", "-i", layout), expected)
    assert_store_empty(layerstore_cli, scratch / "store")


def test_truncated_archive(layerstore_cli: Cli, images: dict[str, Path], scratch: Path) -> None:
    data = images["skopeo-docker"].read_bytes()
    for cut in (len(data) // 2, len(data) // 3, 700):
        bad = scratch / f"cut-{cut}.tar"
        bad.write_bytes(data[:cut])
        one_line_error(layerstore_cli("load", "-i", bad))
        assert_store_empty(layerstore_cli, scratch / "store")


def test_zip_and_empty_files(layerstore_cli: Cli, scratch: Path) -> None:
    zipped = scratch / "image.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("manifest.json", "[]")
    empty = scratch / "empty.tar"
    empty.write_bytes(b"")
    one_line_error(layerstore_cli("load", "-i", zipped), str(zipped))
    one_line_error(layerstore_cli("load", "-i", empty), str(empty))
    one_line_error(layerstore_cli("load", "-i", scratch / "absent.tar"), "no such file")
    one_line_error(layerstore_cli("load", input=b""))
    assert_store_empty(layerstore_cli, scratch / "store")


def test_save_an_imported_chain(layerstore_cli: Cli, scratch: Path) -> None:
    """A chain made by `import` has no config: save builds a minimal valid one that skopeo reads."""
    cli = layerstore_cli
    content = scratch / "content"
    (content / "etc").mkdir(parents=True)
    (content / "etc" / "hello").write_text("hi\n")
    subprocess.run(["tar", "-cf", scratch / "base.tar", "-C", content, "etc"], check=True)
    (content / "etc" / "more").write_text("more\n")
    subprocess.run(["tar", "-cf", scratch / "child.tar", "-C", content, "etc/more"], check=True)
    base = ok(cli("import", scratch / "base.tar")).strip()
    child = ok(cli("import", "--parent", base, scratch / "child.tar")).strip()
    out = scratch / "chain.tar"
    ok(cli("save", child[:12], "-o", out))
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{out}"],
                                       capture_output=True, check=True).stdout)
    assert config["rootfs"]["diff_ids"] == [ok(cli("digest", base)).strip(), ok(cli("digest", child)).strip()]

    # An imported chain is no image to tag or rmi: the error says what it is and the way that works.
    line = one_line_error(cli("tag", child[:12], "app:1"), "is a layer", f"layerstore save {child[:12]} |")
    one_line_error(cli("rmi", child), "is a layer", f"`layerstore rm {child[:12]}`")
    one_line_error(cli("push", child, "127.0.0.1:1/app:1"), "is a layer", f"layerstore save {child[:12]} |")
    one_line_error(cli("tag", "0" * 12, "app:1"), "no image named")
    remedy = line.split("; `", 1)[1].split("`", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSTORE_", "XDG_"))}
    env.update(LAYERSTORE_ROOT=str(scratch / "store"), LAYERSTORE_DRIVER="vfs", XDG_CONFIG_HOME=str(scratch / "xdg"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    loaded = ok(subprocess.run(remedy, shell=True, capture_output=True, check=False, env=env))
    image_id = loaded.removeprefix("Loaded image ID: ").strip()
    ok(cli("tag", image_id, "app:1"))
    assert json.loads(ok(cli("inspect", "app:1")))["id"] == image_id


def test_reading_commands_write_nothing(layerstore_cli: Cli, scratch: Path) -> None:
    ok(layerstore_cli("ls"))
    before = sorted(str(p.relative_to(scratch)) for p in (scratch / "store").rglob("*"))
    assert json.loads(ok(layerstore_cli("images", "--json"))) == []
    one_line_error(layerstore_cli("inspect", "alpine"), "alpine")
    one_line_error(layerstore_cli("mount", "alpine"), "alpine")
    assert sorted(str(p.relative_to(scratch)) for p in (scratch / "store").rglob("*")) == before
