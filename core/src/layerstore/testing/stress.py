"""Concurrent command-line load on one store, for driver tests.

`concurrent_commands` runs several threads, each running ``layerstore``
commands as separate processes against one store root, with automatic
driver selection (no ``--driver``): imports of child layers and their
removal, ``ls``, ``inspect``, ``diff``, ``export``, ``mount``/``umount`` and
``gc``, all at once.  It returns every problem it saw: a command that
failed, an ``ls`` that did not show the base image (a silent switch to
another driver shows as an empty store), another driver's home appearing
under the root.  An empty list means the store took the load.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "CommandHung",
    "cli",
    "cli_env",
    "concurrency_run",
    "concurrent_commands",
    "fill_filesystem",
    "full_filesystem_problems",
    "full_filesystem_run",
    "write_tar",
]

_RUN_CLI = "import sys; from layerstore.cli import main; main(sys.argv[1:])"


def cli_env(config_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for `cli` with no driver, root or config file chosen from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSTORE_") or k == "LAYERSTORE_DEBUG"}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env.update(extra or {})
    return env


# A single command of these runs that takes this long is hung (a backend that stopped answering, such
# as a zfs-fuse daemon in a livelock): it is killed and reported as a problem, so that the run ends.
HUNG_COMMAND_SECONDS = 600


def cli(
    root: Path, args: Sequence[str], env: Mapping[str, str], *, stdout: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``layerstore --root ROOT ARGS...`` in a new process (stdout captured unless `stdout` is given).

    A command still running after `HUNG_COMMAND_SECONDS` is killed; it then returns exit status -9
    and a stderr that says the command hung.
    """
    argv = [sys.executable, "-c", _RUN_CLI, "--root", str(root), *args]
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=HUNG_COMMAND_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, -9, "", f"hung: killed after {HUNG_COMMAND_SECONDS} s")


class CommandHung(AssertionError):
    """A command of a stress run hung (`HUNG_COMMAND_SECONDS`): the backend stopped answering, the run stops."""


def concurrent_commands(
    root: Path,
    base_id: str,
    child_tar: Path,
    env: Mapping[str, str],
    *,
    driver: str,
    workers: int = 8,
    rounds: int = 4,
) -> tuple[list[str], int]:
    """Put `workers` concurrent command loops on the store at `root`; return (problems, commands run).

    `base_id` is an image already in the store (imported by the caller with
    `driver`); `child_tar` is imported on it and removed again by the
    importing workers.  Roles rotate with the worker index: importer,
    lister, mounter, collector.
    """
    problems: list[str] = []
    count = [0]
    lock = threading.Lock()

    def run(args: Sequence[str], *, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        proc = cli(root, args, env, stdout=subprocess.DEVNULL if quiet else None)
        with lock:
            count[0] += 1
            if proc.returncode != 0:
                problems.append(f"`layerstore {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def importer() -> None:
        proc = run(["import", "--parent", base_id, str(child_tar)])
        if proc.returncode == 0:
            child = proc.stdout.strip()
            run(["inspect", child], quiet=True)
            run(["export", child], quiet=True)
            run(["rm", child])

    def lister() -> None:
        proc = run(["ls", "--json"])
        if proc.returncode == 0:
            ids = [image["id"] for image in json.loads(proc.stdout or "[]")]
            if base_id not in ids:
                with lock:
                    problems.append(f"`layerstore ls` did not show the base image {base_id}: {ids}")
        run(["inspect", base_id], quiet=True)
        run(["diff", base_id], quiet=True)

    def mounter() -> None:
        proc = run(["mount", base_id])
        if proc.returncode == 0:
            if not os.path.isdir(proc.stdout.strip()):
                with lock:
                    problems.append(f"`layerstore mount` printed {proc.stdout.strip()!r}, not a directory")
            run(["umount", base_id])

    def collector() -> None:
        run(["gc"], quiet=True)
        run(["ls"], quiet=True)

    roles = (importer, lister, mounter, collector)

    def loop(index: int) -> None:
        for _ in range(rounds):
            roles[index % len(roles)]()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in ("graph", driver))
    if others:
        problems.append(f"other entries appeared under the store root {root}: {', '.join(others)}")
    return problems, count[0]


def fill_filesystem(directory: Path) -> int:
    """Fill the filesystem of `directory` completely (data, then small files for metadata); return bytes written.

    The filler files go into `directory` (outside any store); delete it to free the space again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    chunk = os.urandom(1 << 20)  # incompressible, in case the filesystem compresses
    for size in (1 << 20, 1 << 12, 1):
        try:
            fd = os.open(directory / f"fill-{size}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:
            break  # not even room for a new file
        try:
            while True:
                try:
                    written += os.write(fd, chunk[:size])
                except OSError:
                    break
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
    index = 0
    while True:  # metadata: inodes and directory entries, until those run out too
        try:
            (directory / f"m{index}").touch()
        except OSError:
            break
        index += 1
    return written


def full_filesystem_problems(
    root: Path, base_id: str, child_id: str, env: Mapping[str, str], image_id: str | None = None
) -> list[str]:
    """Run the commands that must work on a full filesystem; return what went wrong.

    Reading (``ls``, ``inspect``, ``check``, ``diff``, ``export``), mounting
    an existing layer, and freeing space (``rm``, ``gc``, and ``rmi`` of
    `image_id` when given) need no new space; ``check`` must not call
    anything FAILED for lack of space.

    Raises `CommandHung` (with the problems so far) when a command hangs: the
    filesystem no longer answers, so no later command could run.
    """
    problems: list[str] = []

    def expect_ok(*args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        proc = cli(root, args, env, stdout=subprocess.DEVNULL if quiet else None)
        command = " ".join(args)
        if proc.returncode == -9 and proc.stderr.startswith("hung:"):
            raise CommandHung("\n".join([*problems, f"`layerstore {command}` on a full filesystem {proc.stderr}"]))
        if proc.returncode != 0:
            problems.append(f"`layerstore {command}` on a full filesystem: exit {proc.returncode}: {proc.stderr}")
        return proc

    expect_ok("ls")
    expect_ok("inspect", child_id, quiet=True)
    proc = expect_ok("check")
    if "FAILED" in (proc.stdout or ""):
        problems.append(f"`layerstore check` on a full filesystem reported FAILED: {proc.stdout.strip()}")
    expect_ok("diff", child_id, quiet=True)
    expect_ok("export", child_id, quiet=True)
    proc = expect_ok("mount", base_id)
    if proc.returncode == 0:
        expect_ok("umount", base_id)
    if image_id is not None:
        expect_ok("images", quiet=True)
        expect_ok("rmi", image_id)
    expect_ok("rm", child_id)
    expect_ok("gc")
    return problems


def write_tar(path: Path, files: Mapping[str, bytes]) -> Path:
    """Write a plain tar of regular `files` ({name: content}) at `path`; return `path`."""
    import io
    import tarfile

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def _small_layers(directory: Path) -> tuple[Path, Path]:
    base = write_tar(directory / "base.tar", {f"etc/f{i}": b"base %d\n" % i * 100 for i in range(50)})
    child = write_tar(directory / "child.tar", {"etc/f1": b"changed\n", "app": b"app\n" * 1000})
    return base, child


def _import(root: Path, env: Mapping[str, str], *args: str) -> str:
    return _cli_ok(root, env, "import", *args).strip()


def _cli_ok(root: Path, env: Mapping[str, str], *args: str) -> str:
    proc = cli(root, args, env)
    if proc.returncode != 0:
        raise AssertionError(f"`layerstore {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def concurrency_run(root: Path, workdir: Path, driver: str, *, workers: int = 8, rounds: int = 3) -> list[str]:
    """Make a store at `root` by automatic selection, load it with `concurrent_commands`, return every problem.

    Afterwards `check` must pass and list no orphan, and the base image must be removable.
    """
    env = cli_env(workdir / "config")
    base, child = _small_layers(workdir)
    base_id = _import(root, env, str(base))
    if not (root / driver).is_dir():
        return [f"automatic selection at {root} did not pick {driver}"]
    problems, commands = concurrent_commands(root, base_id, child, env, driver=driver, workers=workers, rounds=rounds)
    proc = cli(root, ["check"], env)
    if proc.returncode != 0 or "orphan" in proc.stdout:
        problems.append(f"`layerstore check` after {commands} concurrent commands: {proc.stdout}{proc.stderr}")
    proc = cli(root, ["rm", base_id], env)
    if proc.returncode != 0:
        problems.append(f"`layerstore rm` of the base image failed: {proc.stderr.strip()}")
    print(f"concurrency on {driver}: {workers} workers, {rounds} rounds, {commands} commands, {len(problems)} problems")
    return problems


def full_filesystem_run(root: Path, filler: Path, workdir: Path) -> list[str]:
    """Import two layers at `root` and load them again as a named image (saved by `layerstore save`), fill
    its filesystem through directory `filler`, run the commands that must work when full
    (`full_filesystem_problems`), free the space again; return every problem."""
    import shutil

    env = cli_env(workdir / "config")
    base, child = _small_layers(workdir)
    base_id = _import(root, env, str(base))
    child_id = _import(root, env, "--parent", base_id, str(child))
    archive = workdir / "chain.tar"  # the same two layers as an image, with a record and a name
    _cli_ok(root, env, "save", "-o", str(archive), child_id)
    image_id = _cli_ok(root, env, "load", "-q", "-i", str(archive)).split()[-1]
    _cli_ok(root, env, "tag", image_id, "example.com/full:v1")
    fill_filesystem(filler)
    try:
        problems = full_filesystem_problems(root, base_id, child_id, env, image_id)
    except CommandHung as hung:
        return [str(hung)]  # the filesystem does not answer: removing the filler would hang too
    shutil.rmtree(filler)
    proc = cli(root, ["rm", base_id], env)
    if proc.returncode != 0:
        problems.append(f"`layerstore rm` of the base image after freeing space failed: {proc.stderr.strip()}")
    return problems
