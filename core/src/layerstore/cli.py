"""The ``layerstore`` command.

    layerstore [--root DIR] [--driver NAME] [-o key=value]... [--config FILE] COMMAND

Every error is one line on stderr (``layerstore: error: ...``) and a non-zero
exit status; a traceback is shown only for internal errors and only with
``LAYERSTORE_DEBUG=1``.  Output conventions (``--json``, ``-q``, exit codes)
are those of `layerstore.cli_support`; commands added by other modules use
its helpers and attach themselves to `cli`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, cast

import click

from . import __version__
from .cli_support import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    Stopwatch,
    emit_ids,
    emit_json,
    interactive,
    json_option,
    progress,
    quiet_option,
    summary,
)
from .counting import CountingReader as _CountingReader
from .errors import CommandError, ImageNotFound, LayerStoreError
from .imagecli import image_commands, image_layer, inspect_image, refuse_image_archive
from .registrycli import registry_commands
from .sizes import format_size

if TYPE_CHECKING:
    from .config import Settings
    from .drivers import Driver
    from .graph import CheckResult, Graph
    from .image import Image

__all__ = ["cli", "image_record", "main"]


class _Interrupted(Exception):
    """KeyboardInterrupt carried past click (which would print a blank line and abort)."""


class _StoreOSError(Exception):
    """An OSError of a command, with the store root it happened in (for the message)."""

    def __init__(self, error: OSError, root: Path | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.root = root


class _BrokenPipe(Exception):
    """BrokenPipeError carried past click (which would exit silently)."""


def _error_line(message: str) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    try:
        sys.stderr.write(f"layerstore: error: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _os_error_message(exc: OSError, root: Path | None = None) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or root or "the store"
        return f"no space left on {where}; free space and retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {exc.filename or exc}; run as a user who may write the store, or choose --root"
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return exc.strerror or str(exc)


class _State:
    """What the group options chose; opens the store on first use and closes it when the command ends."""

    def __init__(self, root: Path | None, driver: str | None, options: Sequence[str], config: Path | None) -> None:
        self._root = root
        self._driver_name = driver
        self._options = options
        self._config = config
        self._settings: Settings | None = None
        self._store: tuple[Driver, Graph] | None = None
        self.keep_mounts = False

    @property
    def resolved_root(self) -> Path | None:
        """The store root, once the settings were resolved (for error messages); None before."""
        return self._settings.root if self._settings is not None else None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from .config import resolve_settings

            self._settings = resolve_settings(
                root=self._root, driver=self._driver_name, options=self._options, config=self._config
            )
        return self._settings

    def store(self) -> tuple[Driver, Graph]:
        if self._store is None:
            from .config import open_store

            self._store = open_store(self.settings)
        return self._store

    @property
    def store_exists(self) -> bool:
        """Whether the store root holds a store (read-only commands create none)."""
        from .graph import GRAPH_DIR

        return (self.settings.root / GRAPH_DIR).is_dir()

    def existing_graph(self) -> Graph | None:
        """The store's graph, or None when there is no store yet: for commands that only read."""
        if self.store_exists:
            return self.graph
        self.check_driver_name()
        return None

    def check_driver_name(self) -> None:
        """Fail as opening the store would for a driver that is not installed or a misnamed option scope."""
        from .discovery import available_drivers, no_such_driver

        installed = available_drivers()
        self.settings.check_driver_names(installed)
        if self.settings.driver is not None and self.settings.driver not in installed:
            raise no_such_driver(self.settings.driver)

    def graph_for(self, image: str) -> Graph:
        """The store's graph for a command about `image`; `ImageNotFound` when there is no store yet."""
        if not self.store_exists:
            from .truncindex import TruncIndex

            self.check_driver_name()
            with contextlib.suppress(ImageNotFound):
                TruncIndex().get(image)  # an invalid name is refused as in a store
            raise ImageNotFound(f"no image with ID {image}: there is no store at {self.settings.root} yet")
        return self.graph

    @property
    def graph(self) -> Graph:
        return self.store()[1]

    @property
    def driver(self) -> Driver:
        return self.store()[0]

    def close(self) -> None:
        if self._store is not None and not self.keep_mounts:
            driver = self._store[0]
            self._store = None
            driver.cleanup()


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None
        except BrokenPipeError:
            raise _BrokenPipe() from None
        except OSError as exc:
            state = ctx.find_object(_State)
            raise _StoreOSError(exc, state.resolved_root if state is not None else None) from exc


def _short(image_id: str | None, full: bool = False) -> str:
    if not image_id:
        return ""
    return image_id if full else image_id[:12]


def _created_text(image: Image) -> str:
    try:
        return image.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return image.created


def image_record(image: Image, digest: str | None) -> dict[str, Any]:
    """An image in the shared JSON schema (``ls --json``, ``inspect``, ``import --json``)."""
    return {
        "id": image.id,
        "parent": image.parent,
        "created": image.created,
        "comment": image.comment or None,
        "author": image.author or None,
        "size": image.size,
        "digest": digest,
        "container": image.container or None,
        "architecture": image.architecture or None,
        "os": image.os or None,
        "config": image.config,
        "container_config": image.container_config,
    }


def _digest_or_none(graph: Graph, image_id: str) -> str | None:
    from .graph import DigestNotSet

    try:
        return graph.get_digest(image_id)
    except DigestNotSet:
        return None


_HELP_EPILOG = """\b
Environment:
{environment}

\b
Config files (the first found; TOML, or a containers storage.conf or Docker
daemon.json given with --config or LAYERSTORE_CONFIG):
  --config FILE, $LAYERSTORE_CONFIG
  $XDG_CONFIG_HOME/layerstore/config.toml (~/.config/layerstore/config.toml)
  /etc/layerstore/config.toml

\b
Store root: --root, $LAYERSTORE_ROOT, the config file's root, else
/var/lib/layerstore (root) or $XDG_DATA_HOME/layerstore (~/.local/share).
Driver options: -o key=value (selected driver) or -o NAME.key=value (driver NAME).
Output: --json for JSON, -q for IDs only; exit 0 ok, 1 error, 2 usage, 141 closed pipe.
"""


def _epilog() -> str:
    from .config import ENVIRONMENT

    return _HELP_EPILOG.format(environment="\n".join(f"  {name:<22} {what}" for name, what in ENVIRONMENT))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_epilog())
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Store root directory.")
@click.option("--driver", metavar="NAME", help="Storage driver (default: configured, else automatic).")
@click.option("-o", "--option", "--storage-opt", "options", multiple=True, metavar="[DRIVER.]KEY=VALUE",
              help="Driver option (repeatable); DRIVER.KEY=VALUE applies to that driver only.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file: layerstore TOML, containers storage.conf or Docker daemon.json.")
@click.version_option(__version__, prog_name="layerstore")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, driver: str | None, options: tuple[str, ...],
        config: Path | None) -> None:
    """Store, import, export and mount filesystem image layers."""
    state = _State(root, driver, options, config)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _state() -> _State:
    return cast(_State, click.get_current_context().find_object(_State))


for _command in image_commands():  # load, save, images, tag, untag, rmi
    cli.add_command(_command)
for _command in registry_commands():  # pull, push, login, logout
    cli.add_command(_command)


def _capabilities_record(driver: Driver) -> dict[str, Any]:
    caps = driver.capabilities
    return {
        "native_diff": caps.native_diff, "quota": caps.quota, "idmap": caps.idmap,
        "read_only_layers": caps.read_only_layers, "reflink": caps.reflink, "max_depth": caps.max_depth,
    }


@cli.command()
@json_option
def info(as_json: bool) -> None:
    """Show the store root, the driver and its status (creates nothing)."""
    state = _state()
    settings = state.settings
    exists = state.store_exists
    data: dict[str, Any] = {
        "root": str(settings.root),
        "runroot": str(settings.runroot),
        "store_exists": exists,
        "driver": settings.driver,
        "driver_source": settings.driver_source,
        "driver_home": None,
        "config_file": str(settings.config.path) if settings.config.path else None,
        "images": 0,
        "size": 0,
        "status": [],
        "capabilities": None,
    }
    if exists:
        driver, graph = state.store()
        images = graph.walk_all()
        data.update(
            driver=driver.name,
            driver_home=str(driver.home),
            images=len(images),
            size=sum(max(i.size, 0) for i in images),
            status=[{"name": k, "value": v} for k, v in driver.status()],
            capabilities=_capabilities_record(driver),
        )
    if as_json:
        emit_json(data)
        return
    click.echo(f"Root:          {data['root']}{'' if exists else ' (no store yet)'}")
    click.echo(f"Runroot:       {data['runroot']}")
    click.echo(f"Driver:        {data['driver'] or '(automatic)'} (from {settings.driver_source})")
    click.echo(f"Driver home:   {data['driver_home'] or '-'}")
    click.echo(f"Config file:   {data['config_file'] or '(none)'}")
    click.echo(f"Images:        {data['images']} ({format_size(data['size'])})")
    caps = data["capabilities"]
    if caps is not None:
        flags = [name for name, on in caps.items() if on is True]
        click.echo(f"Capabilities:  {', '.join(flags) or '(none)'}; max depth {caps['max_depth'] or 'unlimited'}")
    for row in data["status"]:
        click.echo(f"  {row['name']}: {row['value']}")


def _probe_driver(name: str, probe: Path, settings: Settings, *, selected: bool) -> str | None:
    """None when driver `name` can open a home in `probe`, else the reason it cannot."""
    from .drivers import load_driver

    try:
        driver = load_driver(name, probe / name, settings.options_for(name, selected=selected), settings.id_maps)
    except LayerStoreError as exc:
        return str(exc).replace(str(probe / name), str(settings.root / name))
    with contextlib.suppress(LayerStoreError, OSError):
        driver.cleanup()
    shutil.rmtree(probe / name, ignore_errors=True)
    return None


@cli.command()
@json_option
def drivers(as_json: bool) -> None:
    """List installed drivers and whether each can run on this store's filesystem."""
    from .config import auto_candidates
    from .discovery import NO_DRIVER_INSTALLED, available_drivers

    state = _state()
    settings = state.settings
    installed = available_drivers()
    if not installed:
        if as_json:
            emit_json([])
        click.echo(f"{NO_DRIVER_INSTALLED} (or layerstore-overlay, layerstore-btrfs, layerstore-zfs)", err=as_json)
        return
    settings.check_driver_names(installed)
    # Probe in a fresh directory on the store's filesystem, never inside the store itself.
    base = settings.root
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        probe = Path(tempfile.mkdtemp(prefix=".layerstore-probe-", dir=base))
    except OSError:
        probe = Path(tempfile.mkdtemp(prefix="layerstore-probe-"))
    try:
        # Unscoped options belong to the selected driver only: the others are probed without them.
        reasons = {name: _probe_driver(name, probe, settings, selected=name == settings.driver) for name in installed}
        order = [n for n in auto_candidates(settings.root, installed) if n in installed]
        chosen = settings.driver or next((n for n in order if reasons[n] is None), None)
        if settings.driver is None and chosen is not None and settings.options_for(chosen) != settings.options_for(
            chosen, selected=False
        ):
            reasons[chosen] = _probe_driver(chosen, probe, settings, selected=True)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    rows = [
        {"name": name, "distribution": dist, "supported": reasons[name] is None, "reason": reasons[name],
         "selected": name == chosen}
        for name, dist in installed.items()
    ]
    if as_json:
        emit_json(rows)
        return
    width = max(len(str(r["name"])) for r in rows)
    for row in rows:
        mark = "*" if row["selected"] else " "
        status = "supported" if row["supported"] else f"not supported: {row['reason']}"
        click.echo(f"{mark} {row['name']:<{width}}  {row['distribution']:<20}  {status}")


@cli.command("import")
@click.option("--parent", metavar="ID", help="Parent image (ID or unique prefix).")
@click.option("-m", "--message", default="", help="Comment stored with the image.")
@click.option("--storage-opt", "storage_opts", multiple=True, metavar="KEY=VALUE",
              help="Per-layer driver option, e.g. size=10G for a quota (btrfs, zfs); repeatable.")
@json_option
@quiet_option
@click.argument("file", metavar="FILE|-")
def import_(
    parent: str | None, message: str, storage_opts: tuple[str, ...], as_json: bool, quiet: bool,
            file: str) -> None:
    """Import a layer tar (plain, gzip, bzip2, xz or zstd) as a new image; print its ID."""
    from .config import parse_options

    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise LayerStoreError("the --message text is not valid UTF-8; pass UTF-8 text") from None
    if parent is not None and not parent.strip():
        raise LayerStoreError("--parent needs an image ID or prefix; leave it out to import a base image")
    layer_opts = parse_options(storage_opts, what="--storage-opt")
    refuse_image_archive(file)
    watch = Stopwatch()
    if file == "-":
        source: BinaryIO = sys.stdin.buffer
        length = None
    else:
        source = open(file, "rb")  # noqa: SIM115 -- closed below
        length = os.fstat(source.fileno()).st_size if Path(file).is_file() else None
    try:
        graph = _state().graph
        parent_id = graph.resolve(parent) if parent is not None else None
        with progress(length, "importing") as update:
            image = graph.create(cast(BinaryIO, _CountingReader(source, update)), comment=message, parent=parent_id,
                                 storage_opts=layer_opts)
    finally:
        if file != "-":
            source.close()
    digest = _digest_or_none(graph, image.id)
    if as_json:
        emit_json(image_record(image, digest))
    else:
        click.echo(image.id)
    summary(f"imported {image.id}: {image.size} bytes of files ({format_size(image.size)}), "
            f"{digest or 'no digest'}, {watch}", quiet=quiet or as_json)


@cli.command()
@click.argument("image")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write to FILE instead of standard output.")
def export(image: str, output: Path | None) -> None:
    """Write the layer tar of IMAGE, byte-identical to what was imported."""
    to_stdout = output is None or str(output) == "-"
    if to_stdout and sys.stdout.isatty():
        raise LayerStoreError("refusing to write a tar archive to a terminal; use -o FILE or redirect the output")
    graph = _state().graph_for(image)
    img = graph.get(image)
    with progress(img.size, "exporting") as update:
        if to_stdout:
            graph.write_layer(img, sys.stdout.buffer, update, name="standard output")
            return
        from .outfile import open_output

        with open_output(cast(Path, output), graph.output_journal) as fd:
            graph.write_layer(img, fd, update, name=str(output))


def _tree_lines(graph: Graph, full: bool) -> Iterator[str]:
    images = graph.map()
    children: dict[str | None, list[Image]] = {}
    for img in images.values():
        key = img.parent if img.parent in images else None
        children.setdefault(key, []).append(img)
    for group in children.values():
        group.sort(key=lambda i: (i.created, i.id))

    # An explicit stack, not recursion: a chain can be thousands of layers deep.
    stack: list[tuple[list[Image], int, str]] = [(children.get(None, []), 0, "")]
    while stack:
        kids, n, prefix = stack.pop()
        if n >= len(kids):
            continue
        img = kids[n]
        stack.append((kids, n + 1, prefix))
        last = n == len(kids) - 1
        comment = f"  {img.comment}" if img.comment else ""
        yield f"{prefix}{'└─ ' if last else '├─ '}{_short(img.id, full)}  {format_size(img.size)}{comment}"
        stack.append((children.get(img.id, []), 0, prefix + ("   " if last else "│  ")))


@cli.command("ls")
@click.option("--tree", is_flag=True, help="Show images as a tree of parents and children.")
@json_option
@quiet_option
@click.option("--no-trunc", is_flag=True, help="Show full IDs.")
def ls(tree: bool, as_json: bool, quiet: bool, no_trunc: bool) -> None:
    """List the images (newest first; creates nothing)."""
    graph = _state().existing_graph()
    images = sorted(graph.walk_all(), key=lambda i: (i.created, i.id)) if graph is not None else []
    if as_json:
        # No store means no images, so the graph is only used when there is one.
        emit_json([image_record(img, _digest_or_none(cast("Graph", graph), img.id)) for img in images])
        return
    if quiet:
        emit_ids(img.id for img in reversed(images))
        return
    if tree:
        if graph is not None:
            for line in _tree_lines(graph, no_trunc):
                click.echo(line)
        return
    width = 64 if no_trunc else 12
    click.echo(f"{'IMAGE ID':<{width}}  {'PARENT':<{width}}  {'CREATED':<23}  {'SIZE':>9}  COMMENT")
    for img in reversed(images):
        click.echo(
            f"{_short(img.id, no_trunc):<{width}}  {_short(img.parent, no_trunc):<{width}}  "
            f"{_created_text(img):<23}  {format_size(img.size):>9}  {img.comment}"
        )


@cli.command()
@click.argument("image")
@json_option
@click.option("--raw", is_flag=True, help="Print the image JSON exactly as stored (Docker v1 keys).")
def inspect(image: str, as_json: bool, raw: bool) -> None:
    """Print the metadata of IMAGE (an image name or ID, or a layer) as JSON (``--json`` changes nothing)."""
    graph = _state().graph_for(image)
    if raw:
        click.echo(graph.raw_json(image).decode(errors="replace").rstrip("\n"))
        return
    stored = inspect_image(graph, image)
    if stored is not None:
        emit_json(stored)
        return
    img = graph.get(image)
    emit_json(image_record(img, _digest_or_none(graph, img.id)))


@cli.command()
@click.argument("image")
@json_option
def diff(image: str, as_json: bool) -> None:
    """List what IMAGE's layer changes against its parent (A added, C changed, D deleted)."""
    state = _state()
    img = state.graph_for(image).get(image)
    changes = state.driver.changes(img.id, img.parent)
    if as_json:
        emit_json([{"path": c.path, "kind": c.kind.name.lower()} for c in changes])
        return
    for change in changes:
        click.echo(f"{str(change)[:2]}{_escaped(change.path)}")


def _escaped(path: str) -> str:
    """`path` on one printable line: backslash, control characters and undecodable bytes as escapes."""
    if path.isprintable() and "\\" not in path:
        return path
    out = []
    for ch in path:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


@cli.command()
@click.argument("image")
@json_option
def mount(image: str, as_json: bool) -> None:
    """Make IMAGE's filesystem (an image's top layer, or a layer) visible and print its path."""
    state = _state()
    graph = state.graph_for(image)
    img = graph.get(image_layer(graph, image))
    path = state.driver.get(img.id)
    if as_json:
        emit_json({"id": img.id, "path": path})
    else:
        click.echo(path)
    sys.stdout.flush()
    # Only now does the reference outlive this process (until `umount`): a mount killed before it
    # told the path leaves nothing held.
    state.driver.detach(img.id)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Release every reference, also those of running processes.")
@click.argument("image")
def umount(force: bool, image: str) -> None:
    """Release one `mount` of IMAGE; the last one unmounts it."""
    state = _state()
    graph = state.graph_for(image)
    img = graph.get(image_layer(graph, image))
    if force:
        state.driver.release_all(img.id)
    else:
        state.driver.put(img.id)


@cli.command()
@click.argument("image")
def exists(image: str) -> None:
    """Exit 0 when IMAGE (an ID or unique prefix) is in the store, 1 when it is not; print nothing."""
    graph = _state().existing_graph()
    if graph is None or not graph.exists(image):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Also remove images that are mounted or retained.")
@json_option
@quiet_option
@click.argument("images", nargs=-1, required=True)
def rm(force: bool, as_json: bool, quiet: bool, images: tuple[str, ...]) -> None:
    """Delete images (children first: an image with children is refused)."""
    watch = Stopwatch()
    graph = _state().graph_for(images[0])
    rows: list[dict[str, Any]] = []
    freed = 0
    deleted: set[str] = set()
    for name in images:
        try:
            img = graph.get(name)
            if img.id in deleted:
                continue  # named twice (e.g. by ID and by prefix): deleted once
            graph.delete(img.id, force=force)
            deleted.add(img.id)
        except LayerStoreError as exc:
            if any(d.startswith(name) for d in deleted):
                continue  # a prefix of an image this command already deleted
            if len(images) == 1 and not as_json:
                raise
            if not as_json:
                _error_line(str(exc))
            rows.append({"name": name, "id": None, "deleted": False, "error": " ".join(str(exc).split())})
            continue
        freed += max(img.size, 0)
        rows.append({"name": name, "id": img.id, "deleted": True, "error": None})
        if not as_json:
            click.echo(img.id if quiet else f"deleted {img.id}")
    failed = sum(1 for r in rows if not r["deleted"])
    if as_json:
        emit_json(rows)
    else:
        done = len(rows) - failed
        summary(f"deleted {done} image{'s' if done != 1 else ''} ({format_size(freed)} of files), {watch}",
                quiet=quiet or failed > 0)
    if failed:
        raise CommandError(f"{failed} of {len(images)} images were not deleted") from None


@cli.command()
@click.argument("image")
@json_option
def digest(image: str, as_json: bool) -> None:
    """Print the sha256 digest of IMAGE's uncompressed layer tar."""
    graph = _state().graph_for(image)
    image_id = graph.resolve(image)
    value = graph.get_digest(image_id)
    if as_json:
        emit_json({"id": image_id, "digest": value})
    else:
        click.echo(value)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--root", "suite_root", type=click.Path(file_okay=False, path_type=Path),
              help="A directory on the backend to test in (default: a temporary directory).")
@click.option("--option", "suite_options", multiple=True, metavar="KEY=VALUE", help="Driver option (repeatable).")
@click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JSON certification report to this file.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def conformance(ctx: click.Context, name: str, *, suite_root: Path | None, suite_options: tuple[str, ...],
                report: Path | None, pytest_args: tuple[str, ...]) -> None:
    """Certify driver NAME with the conformance suite (extra arguments go to pytest).

    The driver is opened once first; if it cannot be, the reason is printed
    and the exit is non-zero.  The last line says "certified: ..." or
    "not certified: ..."; the exit is 0 only when certified.
    """
    from .config import parse_options
    from .drivers import available_drivers
    from .errors import DriverNotFound

    try:
        import pytest  # noqa: F401 -- only to tell whether the suite can run
    except ImportError:
        raise LayerStoreError("the conformance suite needs pytest, which is not installed: "
                              "pip install 'layerstore[conformance]'") from None
    from .conformance import run_suite

    installed = available_drivers()
    if name not in installed:
        raise DriverNotFound(
            f"no storage driver named {name!r}; installed drivers: {', '.join(installed) or 'none'}"
        )
    code = run_suite(name, suite_root, parse_options(suite_options), list(pytest_args), report=report)
    ctx.exit(code)


@cli.command()
@json_option
@quiet_option
def check(as_json: bool, quiet: bool) -> None:
    """Reassemble every layer and verify its digest; a line per layer, non-zero exit on any failure.

    With -q only the IDs of the layers that failed are printed.
    """
    watch = Stopwatch()
    graph = _state().existing_graph()
    ids = graph.ids() if graph is not None else []
    results = []
    checked_bytes = 0
    size_total = sum(max(graph.get(i).size, 0) for i in ids) if graph is not None and interactive() else None

    update: Callable[[int], None] = lambda n: None  # noqa: E731 -- replaced by the bar's callback

    def show(result: CheckResult) -> None:
        if as_json:
            return
        if quiet:
            if not result.ok:
                click.echo(result.id)
        elif result.ok:
            note = "" if result.message == "ok" else result.message
            click.echo(f"ok      {result.id}  {result.actual or ''}  {note}".rstrip())
        elif result.unverified:
            click.echo(f"UNVERIFIED  {result.id}  {' '.join(result.message.split())}")
        else:
            click.echo(f"FAILED  {result.id}  {' '.join(result.message.split())}")

    def count(n: int) -> None:
        nonlocal checked_bytes
        checked_bytes += n
        update(n)

    if graph is not None:
        with progress(size_total, "checking") as update:
            bar_shown = size_total is not None and size_total > 0
            for result in graph.check(progress=count):
                results.append(result)
                if not bar_shown:
                    show(result)  # streamed; with a bar on the terminal, printed once it is done
        if bar_shown:
            for result in results:
                show(result)
    failed = sum(1 for r in results if not r.ok and not r.unverified)
    unverified = sum(1 for r in results if r.unverified)
    if as_json:
        emit_json([
            {"id": r.id, "ok": r.ok, "unverified": bool(r.unverified), "message": r.message,
             "expected_digest": r.expected, "actual_digest": r.actual}
            for r in results
        ])
    elif graph is not None and not quiet:
        for description in graph.orphans():
            click.echo(f"orphan  {description} (`layerstore gc` removes it)")
    if failed:
        raise CommandError(f"{failed} of {len(results)} layers failed the check")
    if unverified:
        raise CommandError(f"{unverified} of {len(results)} layers could not be verified (not known to be corrupt)")
    if not results and not as_json and not quiet:
        click.echo("no images in the store")
    summary(f"checked {len(results)} layer{'s' if len(results) != 1 else ''}, {checked_bytes} bytes "
            f"({format_size(checked_bytes)}), all ok, {watch}", quiet=quiet or as_json or not results)


@cli.command()
@json_option
@quiet_option
def gc(as_json: bool, quiet: bool) -> None:
    """Remove orphans: driver layers without image metadata, staging leftovers of killed processes, stale locks.

    With -q only the IDs of the removed orphan layers are printed.
    """
    watch = Stopwatch()
    graph = _state().existing_graph()
    layers: tuple[str, ...] = ()
    staging: tuple[str, ...] = ()
    locks: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    driver: tuple[str, ...] = ()
    if graph is not None:
        report = graph.gc()
        layers, staging, locks, references = report.layers, report.staging, report.locks, report.references
        driver = report.driver
    if as_json:
        emit_json({"removed_layers": list(layers), "removed_staging": list(staging), "removed_locks": list(locks),
                   "released_references": list(references), "removed_driver_leftovers": list(driver)})
        return
    if quiet:
        emit_ids(layers)
        return
    for layer_id in layers:
        click.echo(f"removed orphan layer {layer_id}")
    for name in staging:
        click.echo(f"removed staging leftover {name}")
    for what in driver:
        click.echo(f"removed {what}")
    for image_id in references:
        click.echo(f"released mount references of dead processes to {image_id}")
    if not layers and not staging and not references and not driver:
        click.echo("nothing to remove")
    summary(f"gc removed {len(layers)} orphan layers, {len(staging)} staging leftovers, "
            f"{len(locks)} stale lock files, {len(driver)} driver leftovers, {watch}")


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary files and mounts are cleaned up


class _WarningLine(logging.Handler):
    """Warnings of the library (e.g. a leftover a sweep could not remove) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError):
            text = " ".join(record.getMessage().split())
            sys.stderr.write(f"layerstore: warning: {text}\n")


def _install_handlers() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminated)
    root = logging.getLogger()  # drivers log under their own package names
    if not root.handlers:
        root.addHandler(_WarningLine(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``layerstore`` command."""
    code = 0
    _install_handlers()
    try:
        try:
            result = cli.main(args=list(argv) if argv is not None else None, prog_name="layerstore",
                              standalone_mode=False)
            code = result if isinstance(result, int) else 0
            sys.stdout.flush()
        except click.exceptions.Exit as exc:
            code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `layerstore`: help is the answer
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        code = 0
    except click.ClickException as exc:
        _error_line(exc.format_message() + " (see `layerstore --help`)")
        code = exc.exit_code
    except (click.exceptions.Abort, _Interrupted, KeyboardInterrupt):
        _error_line("interrupted")
        code = EXIT_INTERRUPTED
    except (BrokenPipeError, _BrokenPipe):
        # The reader went away (`| head`): as a shell tool killed by SIGPIPE, silently, status 141.
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    except LayerStoreError as exc:
        _error_line(str(exc))
        code = 1
    except _StoreOSError as exc:
        _error_line(_os_error_message(exc.error, exc.root))
        code = 1
    except OSError as exc:
        _error_line(_os_error_message(exc))
        code = 1
    except Exception as exc:
        if os.environ.get("LAYERSTORE_DEBUG"):
            raise
        _error_line(f"internal error: {type(exc).__name__}: {exc} (set LAYERSTORE_DEBUG=1 for a traceback)")
        code = EXIT_INTERNAL
    _exit(code)


def _exit(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = code or EXIT_BROKEN_PIPE
    except ValueError:
        _silence_stdout()
    raise SystemExit(code)


from .cli_new_driver import new_driver  # noqa: E402 - its own module, attached here

cli.add_command(new_driver)
