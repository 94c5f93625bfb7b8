"""Every failure of `layerstore` is one line on stderr and a non-zero exit, never a traceback.

All tests run the real executable in a subprocess.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import LAYERSTORE, Run, assert_one_line_error, fake_driver_site, make_tar, ok

from layerstore import Graph, load_driver
from layerstore.image import Image, generate_id


def _store_is_empty(run: Run) -> None:
    assert json.loads(ok(run("ls", "--json"))) == []


def test_unknown_id(run: Run) -> None:
    for command in (["export", "0123abcd"], ["inspect", "0123abcd"], ["rm", "0123abcd"], ["mount", "0123abcd"],
                    ["diff", "f" * 64], ["digest", "0123abcd"]):
        assert_one_line_error(run(*command), "no image with ID")


def test_invalid_id(run: Run) -> None:
    assert_one_line_error(run("inspect", ""), "empty image ID prefix")
    assert_one_line_error(run("inspect", "ab cd"), "no spaces")


def test_ambiguous_prefix(run: Run, cli_env: dict[str, str]) -> None:
    root = Path(cli_env["LAYERSTORE_ROOT"])
    driver = load_driver("vfs", root / "vfs")
    try:
        graph = Graph(root, driver)
        ids = sorted("beef" + generate_id()[4:] for _ in range(2))
        for ident in ids:
            graph.register(Image(id=ident), io.BytesIO(make_tar({"f": ident.encode()})))
    finally:
        driver.cleanup()
    line = assert_one_line_error(run("inspect", "beef"), "ambiguous", ids[0], ids[1])
    assert "give more characters" in line
    assert json.loads(ok(run("inspect", ids[1][:30])))["id"] == ids[1]


def test_wrong_driver_name(run: Run) -> None:
    assert_one_line_error(run("--driver", "nosuch", "ls"), "nosuch", "vfs")
    assert_one_line_error(run("ls", env={"LAYERSTORE_DRIVER": "nosuch2"}), "nosuch2")
    assert_one_line_error(run("conformance", "nosuch3"), "nosuch3", "vfs")


@pytest.fixture
def fake_unsupported_driver(tmp_path: Path) -> dict[str, str]:
    """A driver distribution (found through its entry point) whose factory says it cannot run here."""
    source = (
        "from layerstore.errors import DriverNotSupported\n"
        "def factory(home, options, id_maps):\n"
        "    raise DriverNotSupported('fakedrv: needs the frobnicator kernel module (modprobe frob)')\n"
    )
    return fake_driver_site(tmp_path / "site", "fakedrv", "layerstore_fakedrv", source, "factory")


def test_unsupported_driver(run: Run, fake_unsupported_driver: dict[str, str], tmp_path: Path) -> None:
    layer = tmp_path / "l.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    proc = run("--driver", "fakedrv", "import", layer, env=fake_unsupported_driver)
    assert_one_line_error(proc, "frobnicator")
    assert not (tmp_path / "store").exists()
    rows = {r["name"]: r for r in json.loads(ok(run("drivers", "--json", env=fake_unsupported_driver)))}
    assert rows["fakedrv"]["supported"] is False and "frobnicator" in rows["fakedrv"]["reason"]


def test_malformed_config(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('driver = "vfs"\n[drivers.vfs\nx = 1\n')
    assert_one_line_error(run("--config", bad, "ls"), str(bad), "line 2")
    assert_one_line_error(run("ls", env={"LAYERSTORE_CONFIG": str(bad)}), str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('driver = "vfs"\nstorage = "x"\ncolour = 1\n')
    assert_one_line_error(run("--config", unknown, "ls"), "colour", "storage")
    assert_one_line_error(run("--config", tmp_path / "missing.toml", "ls"), "missing.toml", "does not exist")


def test_option_not_key_value(run: Run) -> None:
    assert_one_line_error(run("-o", "novalue", "ls"), "novalue", "key=value")


def test_usage_errors_are_one_line(run: Run) -> None:
    assert_one_line_error(run("frobnicate"), "frobnicate")
    assert_one_line_error(run("export"), "IMAGE")
    assert_one_line_error(run("ls", "--bogus"), "--bogus")


def test_unsafe_tar(run: Run, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    evil.write_bytes(make_tar({"ok": b"fine", "../../escaped": b"owned"}))
    assert_one_line_error(run("import", evil), "escaped")
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        through = tarfile.TarInfo("link/passwd-owned")
        through.size = 3
        tf.addfile(through, io.BytesIO(b"pwn"))
    _store_is_empty(run)
    evil.write_bytes(buf.getvalue())
    ok(run("import", evil))  # the link resolves inside the layer: link/x lands in the layer's own etc/
    assert not Path("/etc/passwd-owned").exists()


def test_corrupt_tar(run: Run, tmp_path: Path) -> None:
    raw = make_tar({"a": os.urandom(100_000), "b": b"b"})
    for name, data in (("truncated.tar.gz", gzip.compress(raw)[:-100]), ("truncated.tar", raw[:50_000]),
                       ("garbage.tar", b"\x01" * 5000)):
        path = tmp_path / name
        path.write_bytes(data)
        assert_one_line_error(run("import", path))
    _store_is_empty(run)


def test_missing_file(run: Run, tmp_path: Path) -> None:
    assert_one_line_error(run("import", tmp_path / "nope.tar"), "nope.tar", "No such file")
    assert_one_line_error(run("import", tmp_path), str(tmp_path))


def test_rm_of_a_parent(run: Run, tmp_path: Path) -> None:
    layer = tmp_path / "l.tar"
    layer.write_bytes(make_tar({"a": b"a"}))
    parent = ok(run("import", layer)).strip()
    child = ok(run("import", "--parent", parent, layer)).strip()
    assert_one_line_error(run("rm", parent), parent, child[:12], "delete them first")
    assert_one_line_error(run("rm", "--force", parent), child[:12])
    assert len(json.loads(ok(run("ls", "--json")))) == 2


def test_export_to_a_closed_pipe(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    layer = tmp_path / "big.tar"
    layer.write_bytes(make_tar({"big": os.urandom(4_000_000)}))
    image_id = ok(run("import", layer)).strip()
    proc = subprocess.Popen([LAYERSTORE, "export", image_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1000)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait()
    # Silent, with the status a shell gives a tool killed by SIGPIPE, but exited, not killed.
    assert err == b"" and proc.returncode == 141


@pytest.fixture
def tiny_store(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the store root (unmounted by the finalizer even when the test fails)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def test_no_space_left(run: Run, tmp_path: Path, tiny_store: Path) -> None:
    layer = tmp_path / "big.tar"
    layer.write_bytes(make_tar({"fits": b"small", "big": os.urandom(3_000_000)}))
    env = {"LAYERSTORE_ROOT": str(tiny_store)}
    assert_one_line_error(run("import", layer, env=env), "no space left")
    assert json.loads(ok(run("ls", "--json", env=env))) == []
    assert os.listdir(tiny_store / "graph" / "_tmp") == []
    layers = tiny_store / "vfs" / "dir"
    assert not layers.exists() or os.listdir(layers) == []
    small = tmp_path / "small.tar"
    small.write_bytes(make_tar({"fits": b"small"}))
    ok(run("import", small, env=env))  # the space was given back


def test_conformance_without_pytest_is_a_one_line_hint(run: Run, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "pytest.py").write_text("raise ImportError('pytest hidden by the test')\n")
    proc = run("conformance", "vfs", env={"PYTHONPATH": str(hide)})
    assert_one_line_error(proc, "needs pytest", "pip install 'layerstore[conformance]'")
