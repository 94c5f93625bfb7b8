"""The layerstore side of the benchmark, run as a child process so that its RSS and wall time are its own.

``python -m bench.layerstore_runner COMMAND --root R --driver D [-o k=v] ...``

- ``import FILE [--parent ID]``: `Graph` registration of a layer tar (any
  compression) through the Python API; prints the new image ID.
- ``export ID``: `Graph.write_layer` to stdout (the layer tar `Graph.tar_layer` reads).
- ``create-child PARENT``: `Driver.create` of a new layer on `PARENT`, then
  (unmeasured by the caller: it is a separate invocation) removal.
- ``chain DEPTH [--base ID]``: create a chain of DEPTH layers, mount the top,
  unmount it, remove them all, timing every step.
- ``remove ID``: `Driver.remove` (cleanup).
- ``wipe``: delete every image of the store and release the driver.

Besides its real output, each command writes one line ``BENCH-JSON {...}`` to
stderr with the time spent inside the operation (without interpreter start-up
and imports); `parse_inner` reads it back.  `cli_argv` gives the equivalent
``layerstore`` command line for the CLI measurements.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .measure import Measurement

MARK = "BENCH-JSON "


def runner_argv(command: str, root: Path, driver: str, options: dict[str, str], *args: str) -> list[str]:
    """argv running this module's `command` with the benchmark's interpreter."""
    opts = [x for k, v in options.items() for x in ("-o", f"{k}={v}")]
    return [sys.executable, "-m", "bench.layerstore_runner", command, "--root", str(root), "--driver", driver,
            *opts, *args]


def cli_argv(root: Path, driver: str, options: dict[str, str], *args: str) -> list[str]:
    """argv of the installed ``layerstore`` command (next to the interpreter) with global options."""
    exe = Path(sys.executable).with_name("layerstore")
    opts = [x for k, v in options.items() for x in ("-o", f"{k}={v}")]
    return [str(exe), "--root", str(root), "--driver", driver, *opts, *args]


def parse_inner(m: Measurement) -> dict[str, Any]:
    """The ``BENCH-JSON`` record a runner command wrote to stderr ({} if none)."""
    for line in reversed(m.stderr.splitlines()):
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK):])
            return result
    return {}


def _report(**values: Any) -> None:
    print(MARK + json.dumps(values), file=sys.stderr, flush=True)


def _open_graph(args: argparse.Namespace) -> Any:
    from layerstore import Graph, load_driver

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    driver = load_driver(args.driver, root / args.driver, dict(args.option))
    return Graph(root, driver)


def _register(graph: Any, stream: Any, parent: str | None) -> str:
    return str(graph.create(stream, parent=parent).id)


def cmd_import(args: argparse.Namespace) -> None:
    graph = _open_graph(args)
    started = time.perf_counter()
    with open(args.file, "rb") as f:
        image_id = _register(graph, f, args.parent)
    _report(seconds=time.perf_counter() - started)
    print(image_id)


def cmd_export(args: argparse.Namespace) -> None:
    graph = _open_graph(args)
    started = time.perf_counter()
    graph.write_layer(graph.get(args.id), sys.stdout.buffer)
    _report(seconds=time.perf_counter() - started)


def _driver(args: argparse.Namespace) -> Any:
    from layerstore import load_driver

    root = Path(args.root)
    return load_driver(args.driver, root / args.driver, dict(args.option))


def cmd_create_child(args: argparse.Namespace) -> None:
    from layerstore.image import generate_id

    driver = _driver(args)
    child = generate_id()
    started = time.perf_counter()
    driver.create(child, args.parent)
    _report(seconds=time.perf_counter() - started)
    print(child)


def cmd_remove(args: argparse.Namespace) -> None:
    driver = _driver(args)
    driver.remove(args.id, force=True)


def cmd_chain(args: argparse.Namespace) -> None:
    from layerstore.image import generate_id

    driver = _driver(args)
    ids: list[str] = []
    create_times: list[float] = []
    parent = args.base
    every = max(1, args.depth // 10)
    total0 = time.perf_counter()
    for i in range(args.depth):
        layer = generate_id()
        t0 = time.perf_counter()
        driver.create(layer, parent)
        create_times.append(time.perf_counter() - t0)
        if args.verbose and ((i + 1) % every == 0 or i == 0):
            print(f"  create layer {i + 1:4d}: {create_times[-1] * 1000:8.1f} ms", file=sys.stderr, flush=True)
        ids.append(layer)
        parent = layer
    create_total = time.perf_counter() - total0
    t0 = time.perf_counter()
    path = driver.get(ids[-1])
    entries = len(list(Path(path).iterdir()))
    mount_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver.put(ids[-1])
    unmount_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for layer in reversed(ids):
        driver.remove(layer)
    remove_s = time.perf_counter() - t0
    if args.verbose:
        print(f"  mount top: {mount_s * 1000:.1f} ms ({entries} entries), unmount {unmount_s * 1000:.1f} ms, "
              f"remove all: {remove_s:.2f} s", file=sys.stderr, flush=True)
    driver.cleanup()
    _report(
        seconds=time.perf_counter() - total0, create_total=create_total, create_times=create_times,
        mount=mount_s, unmount=unmount_s, remove_total=remove_s, top_entries=entries,
    )


def cmd_wipe(args: argparse.Namespace) -> None:
    graph = _open_graph(args)
    # Children before parents: delete the heads until nothing is left.
    while graph.map():
        for image_id in list(graph.heads()):
            graph.delete(image_id, force=True)
    graph.driver.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the child process."""
    parser = argparse.ArgumentParser(prog="bench.layerstore_runner")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--driver", required=True)
        p.add_argument("-o", "--option", action="append", default=[], type=lambda s: tuple(s.split("=", 1)))
        return p

    p = add("import")
    p.add_argument("file")
    p.add_argument("--parent")
    p.set_defaults(func=cmd_import)
    p = add("export")
    p.add_argument("id")
    p.set_defaults(func=cmd_export)
    p = add("create-child")
    p.add_argument("parent")
    p.set_defaults(func=cmd_create_child)
    p = add("remove")
    p.add_argument("id")
    p.set_defaults(func=cmd_remove)
    p = add("chain")
    p.add_argument("depth", type=int)
    p.add_argument("--base")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_chain)
    p = add("wipe")
    p.set_defaults(func=cmd_wipe)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
