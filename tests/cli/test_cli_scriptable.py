"""The command line as scripts use it: one JSON schema everywhere, -q, `exists`, pipes, read-only commands."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import click
from cli_helpers import LAYERSTORE, Run, make_tar, ok

from layerstore.cli import cli
from layerstore.cli_support import FREE_FORM_KEYS

SNAKE = re.compile(r"[a-z][a-z0-9_]*")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _check_schema(value: Any, where: str = "$") -> None:
    """Keys are snake_case, sizes are integers, digests are sha256:<hex>, absent is null (not a missing key)."""
    if isinstance(value, list):
        for n, item in enumerate(value):
            _check_schema(item, f"{where}[{n}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert SNAKE.fullmatch(key), f"{where}: key {key!r} is not snake_case"
            if key in FREE_FORM_KEYS:
                continue
            if key == "size" or key.endswith("_size"):
                assert isinstance(item, int) and not isinstance(item, bool), f"{where}.{key}: {item!r}"
            if key == "digest" or key.endswith("_digest"):
                assert item is None or DIGEST.fullmatch(item), f"{where}.{key}: {item!r}"
            _check_schema(item, f"{where}.{key}")


def _layer(tmp_path: Path, name: str, members: dict[str, bytes | None]) -> Path:
    path = tmp_path / name
    path.write_bytes(make_tar(members))
    return path


def _json_commands() -> set[str]:
    """Every command of layerstore.cli that takes --json (the walk below must cover each one).

    Image and registry commands (their own modules) are walked by their own tests.
    """
    return {name for name, command in cli.commands.items()
            if getattr(command.callback, "__module__", "") == "layerstore.cli"
            and any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)}


def test_every_json_command_follows_one_schema(run: Run, tmp_path: Path) -> None:
    base = ok(run("import", _layer(tmp_path, "a.tar", {"etc": None, "etc/a": b"a\n"}))).strip()
    child_json = json.loads(ok(run("import", "--json", "--parent", base, "-m", "c",
                                   _layer(tmp_path, "b.tar", {"etc": None, "etc/.wh.a": b"", "b": b"bb"}))))
    child = child_json["id"]
    walked = {
        "import": child_json,
        "info": json.loads(ok(run("info", "--json"))),
        "drivers": json.loads(ok(run("drivers", "--json"))),
        "ls": json.loads(ok(run("ls", "--json"))),
        "inspect": json.loads(ok(run("inspect", "--json", child))),
        "diff": json.loads(ok(run("diff", "--json", child))),
        "digest": json.loads(ok(run("digest", "--json", child))),
        "check": json.loads(ok(run("check", "--json"))),
        "gc": json.loads(ok(run("gc", "--json"))),
        "mount": json.loads(ok(run("mount", "--json", child))),
    }
    assert walked["mount"]["id"] == child and os.path.isdir(walked["mount"]["path"])
    ok(run("umount", child))
    walked["rm"] = json.loads(ok(run("rm", "--json", child)))
    assert set(walked) == _json_commands(), "a command takes --json but is not walked here"
    for name, value in walked.items():
        _check_schema(value, name)

    assert child_json["parent"] == base and child_json["comment"] == "c" and child_json["author"] is None
    assert child_json["size"] == 2
    assert {r["id"] for r in walked["ls"]} == {base, child}
    root_row = next(r for r in walked["ls"] if r["id"] == base)
    assert root_row["parent"] is None and DIGEST.fullmatch(root_row["digest"])
    assert walked["diff"] == [{"path": "/b", "kind": "add"}, {"path": "/etc", "kind": "modify"},
                              {"path": "/etc/a", "kind": "delete"}]
    assert walked["digest"] == {"id": child, "digest": child_json["digest"]}
    assert [r["ok"] for r in walked["check"]] == [True, True]
    assert walked["info"]["images"] == 2 and walked["info"]["driver"] == "vfs"
    assert walked["info"]["capabilities"]["max_depth"] is None or walked["info"]["capabilities"]["max_depth"] > 0
    assert walked["rm"] == [{"name": child, "id": child, "deleted": True, "error": None}]
    assert walked["gc"] == {"removed_layers": [], "removed_staging": [], "removed_locks": [],
                            "released_references": [], "removed_driver_leftovers": []}


def test_quiet_prints_only_ids_and_no_summary(run: Run, tmp_path: Path) -> None:
    layer = _layer(tmp_path, "a.tar", {"a": b"a"})
    first = run("import", "-q", layer)
    assert first.returncode == 0 and first.stderr == b""
    image_a = first.stdout.decode().strip()
    image_b = ok(run("import", layer)).strip()
    listed = ok(run("ls", "-q")).split()
    assert sorted(listed) == sorted([image_a, image_b]) and all(len(i) == 64 for i in listed)
    assert ok(run("check", "-q")) == ""  # only failed IDs: none
    removed = run("rm", "-q", image_a, image_b)
    assert removed.returncode == 0 and removed.stderr == b""
    assert removed.stdout.decode().split() == [image_a, image_b]
    assert ok(run("ls", "-q")) == ""


def test_summaries_go_to_stderr(run: Run, tmp_path: Path) -> None:
    raw = make_tar({"a": b"abc"})
    layer = tmp_path / "a.tar"
    layer.write_bytes(raw)
    proc = run("import", layer)
    image_id = proc.stdout.decode().strip()
    err = proc.stderr.decode()
    assert len(image_id) == 64 and "\n" not in image_id
    assert f"imported {image_id}" in err and "3 bytes" in err and hashlib.sha256(raw).hexdigest() in err, err
    assert " s" in err  # elapsed time
    proc = run("check")
    assert proc.stdout.decode().startswith("ok ") and "checked 1 layer" in proc.stderr.decode()
    proc = run("rm", image_id)
    assert proc.stdout.decode().strip() == f"deleted {image_id}" and "deleted 1 image" in proc.stderr.decode()
    proc = run("gc")
    assert "gc removed 0 orphan layers" in proc.stderr.decode()


def test_exists(run: Run, tmp_path: Path) -> None:
    missing = run("exists", "0123abcd")
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, b"", b"")
    assert not (tmp_path / "store").exists()
    image_id = ok(run("import", _layer(tmp_path, "a.tar", {"a": b"a"}))).strip()
    for name in (image_id, image_id[:6]):
        found = run("exists", name)
        assert (found.returncode, found.stdout, found.stderr) == (0, b"", b"")
    assert run("exists", "f" * 64).returncode == 1


def test_closed_pipe_is_silent_141(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    layer = _layer(tmp_path, "a.tar", {"a": b"a"})
    for _ in range(3):
        ok(run("import", layer))
    # `layerstore info | head -1`, with a reader that closes at once.
    for argv in (["info"], ["ls", "--no-trunc"], ["inspect", "--raw", ok(run("ls", "-q")).split()[0]]):
        proc = subprocess.Popen([LAYERSTORE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait() in (0, 141), argv  # 0 when everything fitted the pipe before it closed
        assert err == b"", (argv, err)
    shell = subprocess.run(["bash", "-c", f"set -o pipefail; {LAYERSTORE} info | head -1"], capture_output=True,
                           env=cli_env, check=False)
    assert shell.stdout.decode().startswith("Root:") and shell.stderr == b""


def test_read_only_commands_create_nothing(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    root = Path(cli_env["LAYERSTORE_ROOT"])
    info = json.loads(ok(run("info", "--json")))
    assert info["store_exists"] is False and info["images"] == 0 and info["root"] == str(root)
    assert ok(run("info")).startswith(f"Root:          {root} (no store yet)")
    assert json.loads(ok(run("ls", "--json"))) == [] and ok(run("ls", "-q")) == ""
    assert ok(run("ls", "--tree")) == ""
    assert ok(run("check")) == "no images in the store\n"
    assert json.loads(ok(run("gc", "--json")))["removed_layers"] == []
    ok(run("drivers"))
    for argv in (["inspect", "0123abcd"], ["digest", "0123abcd"], ["diff", "0123abcd"], ["export", "0123abcd"]):
        proc = run(*argv)
        assert proc.returncode == 1 and b"there is no store" in proc.stderr, proc.stderr
    assert not root.exists(), sorted(p.name for p in root.iterdir())
    assert sorted(os.listdir(tmp_path)) == [], "something was created next to the store"


def test_help_names_environment_and_config_paths(run: Run) -> None:
    text = ok(run("--help"))
    for name in ("LAYERSTORE_ROOT", "LAYERSTORE_DRIVER", "LAYERSTORE_CONFIG", "LAYERSTORE_RUNROOT",
                 "STORAGE_DRIVER", "STORAGE_OPTS", "LAYERSTORE_DEBUG", "/etc/layerstore/config.toml",
                 "XDG_CONFIG_HOME", "storage.conf", "daemon.json", "exists", "141"):
        assert name in text, name


def test_tree_of_a_deep_chain_and_siblings(cli_env: dict[str, str], run: Run) -> None:
    import io

    from layerstore import Graph, load_driver

    root = Path(cli_env["LAYERSTORE_ROOT"])
    driver = load_driver("vfs", root / "vfs")
    try:
        graph = Graph(root, driver)
        base = graph.create(None, comment="base")
        sibling = graph.create(io.BytesIO(make_tar({"s": b"s"})), parent=base.id, comment="sibling")
        parent = base.id
        for n in range(1100):  # deeper than Python's recursion limit
            parent = graph.create(None, parent=parent, comment=f"c{n}").id
    finally:
        driver.cleanup()
    lines = ok(run("ls", "--tree")).splitlines()
    assert len(lines) == 1102
    assert lines[0].startswith("└─ " + base.id[:12]) and lines[0].endswith("base")
    assert lines[1].startswith("   ├─ " + sibling.id[:12]) and lines[1].endswith("sibling")  # created first
    assert lines[2].startswith("   └─ ") and lines[2].endswith("c0")
    assert lines[-1].startswith("   " * 1100 + "└─ ") and lines[-1].endswith("c1099")


def test_progress_bar_never_shares_a_line_with_results(run: Run, tmp_path: Path, cli_env: dict[str, str]) -> None:
    layer = _layer(tmp_path, "a.tar", {"big": os.urandom(4 << 20)})
    ids = [ok(run("import", "-q", layer)).strip() for _ in range(2)]
    # `script` gives the command a terminal, so the bar is drawn (util-linux, as on every Debian).
    proc = subprocess.run(["script", "-qec", f"{LAYERSTORE} check", "/dev/null"], capture_output=True,
                          env=cli_env, check=False)
    assert proc.returncode == 0, proc.stdout
    text = proc.stdout.decode(errors="replace")
    assert "checking" in text, text  # the bar was there
    results = [line for line in text.replace("\r\n", "\n").split("\n") if "sha256:" in line and "ok " in line]
    assert len(results) == 2 and all(line.startswith("ok      ") for line in results), results
    assert {line.split()[1] for line in results} == set(ids)
