"""A second process that holds a layer mounted, for the cross-process reference tests.

Run as ``python -m layerstore.conformance._holder``.  The first line on
stdin is a JSON spec ``{"name", "factory", "home", "options", "layer"}``
(`factory` is ``"module:qualname"`` or null for the installed entry point).
The process opens the driver, ``get``s the layer, keeps a descriptor of the
returned directory open and answers one JSON line per command line:

- ``check NAME``: the directory listing through the held descriptor, the
  contents of file NAME read through it, whether the path still names the
  same directory, and the layer's reference count;
- ``put``: releases its reference;
- ``exit``: ends.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import IO, Any

from layerstore.drivers import Driver, load_driver, open_driver


def import_factory(spec: str) -> Any:
    """Import a factory named ``"module:qualname"``."""
    module_name, _, qualname = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def open_from_spec(spec: dict[str, Any]) -> Driver:
    """Open the driver a child-process spec names (``name``, ``factory``, ``home``, ``options``)."""
    if spec["factory"] is None:
        return load_driver(spec["name"], spec["home"], spec["options"])
    return open_driver(spec["name"], import_factory(spec["factory"]), spec["home"], spec["options"])


def _reply(out: IO[str], **values: object) -> None:
    out.write(json.dumps(values) + "\n")
    out.flush()


def main() -> None:
    """Serve the commands on stdin (see the module docstring)."""
    spec = json.loads(sys.stdin.readline())
    driver = open_from_spec(spec)
    layer = spec["layer"]
    path = driver.get(layer)
    held = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    held_stat = os.fstat(held)
    _reply(sys.stdout, path=path)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "check":
            try:
                with open(arg, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=held)) as f:
                    content: str | None = f.read().decode(errors="replace")
            except OSError as exc:
                content = f"<{exc.strerror}>"
            try:
                now = os.stat(path)
                same = (now.st_dev, now.st_ino) == (held_stat.st_dev, held_stat.st_ino)
            except OSError:
                same = False
            _reply(
                sys.stdout,
                listing=sorted(os.listdir(held)),
                content=content,
                same_directory=same,
                references=driver.references(layer),
            )
        elif command == "put":
            driver.put(layer)
            _reply(sys.stdout, ok=True)
        elif command == "exit":
            break
    os.close(held)


class Holder:
    """The test side: starts the holder process and talks to it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        env = dict(os.environ)
        # The driver factory may live in a test module that only this process's sys.path can find.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "layerstore.conformance._holder"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.path: str = self._ask(json.dumps(spec))["path"]

    def _ask(self, line: str) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("holder process has no pipes")
        stdin.write(line + "\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer:
            _, err = self.proc.communicate()
            raise RuntimeError(f"the holder process failed (exit {self.proc.returncode}):\n{err}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def check(self, name: str) -> dict[str, Any]:
        """What the holder sees of its layer now."""
        return self._ask(f"check {name}")

    def put(self) -> None:
        """Make the holder release its reference."""
        self._ask("put")

    def close(self) -> None:
        """End the holder process (it does not put: a killed holder does not either)."""
        if self.proc.poll() is None:
            self.proc.communicate("exit\n")


if __name__ == "__main__":
    main()
