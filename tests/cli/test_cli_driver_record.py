"""A store remembers its driver: automatic selection keeps it, another driver is refused, no silent fallback."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import Run, assert_one_line_error, make_tar, ok


def test_the_driver_is_recorded_and_kept(run: Run, cli_env: dict[str, str]) -> None:
    root = Path(cli_env["LAYERSTORE_ROOT"])
    image = ok(run("import", "-", input=make_tar({"f": b"x"}))).strip()
    assert (root / ".driver").read_text() == "vfs\n"
    listed = ok(run("ls", "--no-trunc", env={"LAYERSTORE_DRIVER": ""}))
    assert image in listed, "automatic selection did not keep the store's driver"
    err = assert_one_line_error(run("--driver", "overlay", "ls"), "created with driver vfs, not overlay")
    assert "--driver" in err
    assert_one_line_error(run("ls", env={"LAYERSTORE_DRIVER": "btrfs"}), "created with driver vfs, not btrfs")


def test_automatic_selection_never_falls_back(run: Run, cli_env: dict[str, str]) -> None:
    root = Path(cli_env["LAYERSTORE_ROOT"])
    (root / "graph").mkdir(parents=True)
    (root / ".driver").write_text("nosuchdriver\n")
    assert_one_line_error(
        run("ls", env={"LAYERSTORE_DRIVER": ""}), f"the store at {root} uses driver nosuchdriver, which cannot start"
    )
    assert sorted(p.name for p in root.iterdir()) == [".driver", "graph"], "another driver's home was created"
