"""The ``layerstore`` command.

    layerstore [--root DIR] [--driver NAME] [-o key=value]... [--config FILE] COMMAND

Every error is one line on stderr (``layerstore: error: ...``) and a non-zero
exit status; a traceback is shown only for internal errors and only with
``LAYERSTORE_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import errno
import json
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
from .counting import CountingReader as _CountingReader
from .errors import LayerStoreError
from .imagecli import image_commands, image_layer, inspect_image, refuse_image_archive
from .registrycli import registry_commands
from .sizes import format_size

if TYPE_CHECKING:
    from .config import Settings
    from .drivers import Driver
    from .graph import Graph
    from .image import Image

__all__ = ["cli", "main"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_INTERNAL = 70


class _Interrupted(Exception):
    """KeyboardInterrupt carried past click (which would print a blank line and abort)."""


class _BrokenPipe(Exception):
    """BrokenPipeError carried past click (which would exit silently)."""


class CommandError(LayerStoreError):
    """A command failed in a way already explained by its output (e.g. `check` found bad layers)."""


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


_last_state: list[_State] = []


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
        _last_state[:] = [self]

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


def _interactive() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _progress(length: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise."""
    if not _interactive() or not length:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update


def _short(image_id: str | None, full: bool = False) -> str:
    if not image_id:
        return ""
    return image_id if full else image_id[:12]


def _created_text(image: Image) -> str:
    try:
        return image.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return image.created


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Store root directory.")
@click.option("--driver", metavar="NAME", help="Storage driver (default: configured, else automatic).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Driver option (repeatable).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="Config file (TOML).")
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """Show the store root, the driver and its status."""
    state = _state()
    settings = state.settings
    driver, graph = state.store()
    images = graph.walk_all()
    caps = driver.capabilities
    data = {
        "root": str(settings.root),
        "driver": driver.name,
        "driver_source": settings.driver_source,
        "driver_home": str(driver.home),
        "config_file": str(settings.config.path) if settings.config.path else None,
        "images": len(images),
        "size": sum(max(i.size, 0) for i in images),
        "status": [[k, v] for k, v in driver.status()],
        "capabilities": {
            "native_diff": caps.native_diff, "quota": caps.quota, "idmap": caps.idmap,
            "read_only_layers": caps.read_only_layers, "reflink": caps.reflink, "max_depth": caps.max_depth,
        },
    }
    if as_json:
        _print_json(data)
        return
    click.echo(f"Root:          {data['root']}")
    click.echo(f"Driver:        {driver.name} (from {settings.driver_source})")
    click.echo(f"Driver home:   {driver.home}")
    click.echo(f"Config file:   {data['config_file'] or '(none)'}")
    click.echo(f"Images:        {len(images)} ({format_size(cast(int, data['size']))})")
    flags = [name for name, on in cast(dict[str, Any], data["capabilities"]).items() if on is True]
    click.echo(f"Capabilities:  {', '.join(flags) or '(none)'}; max depth {caps.max_depth or 'unlimited'}")
    for key, value in driver.status():
        click.echo(f"  {key}: {value}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def drivers(as_json: bool) -> None:
    """List installed drivers and whether each can run on this store's filesystem."""
    from .config import auto_candidates
    from .drivers import available_drivers, load_driver

    state = _state()
    settings = state.settings
    installed = available_drivers()
    if not installed:
        if as_json:
            _print_json([])
        click.echo("no storage driver is installed; install one, e.g. `pip install layerstore-vfs` "
                   "(or layerstore-overlay, layerstore-btrfs, layerstore-zfs)", err=as_json)
        return
    # Probe in a fresh directory on the store's filesystem, never inside the store itself.
    base = settings.root
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        probe = Path(tempfile.mkdtemp(prefix=".layerstore-probe-", dir=base))
    except OSError:
        probe = Path(tempfile.mkdtemp(prefix="layerstore-probe-"))
    rows = []
    try:
        for name, dist in installed.items():
            reason = ""
            try:
                driver = load_driver(name, probe / name, settings.options_for(name), settings.id_maps)
            except LayerStoreError as exc:
                supported = False
                reason = str(exc).replace(str(probe / name), str(settings.root / name))
            else:
                supported = True
                with contextlib.suppress(LayerStoreError, OSError):
                    driver.cleanup()
            rows.append({"name": name, "distribution": dist, "supported": supported, "reason": reason})
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    order = [n for n in auto_candidates(settings.root, installed) if n in installed]
    chosen = settings.driver or next((r["name"] for r in rows if r["supported"] and r["name"] in order), None)
    for row in rows:
        row["selected"] = row["name"] == chosen
    if as_json:
        _print_json(rows)
        return
    width = max(len(str(r["name"])) for r in rows)
    for row in rows:
        mark = "*" if row["selected"] else " "
        status = "supported" if row["supported"] else f"not supported: {row['reason']}"
        click.echo(f"{mark} {row['name']:<{width}}  {row['distribution']:<20}  {status}")


@cli.command("import")
@click.option("--parent", metavar="ID", help="Parent image (ID or unique prefix).")
@click.option("-m", "--message", default="", help="Comment stored with the image.")
@click.argument("file", metavar="FILE|-")
def import_(parent: str | None, message: str, file: str) -> None:
    """Import a layer tar (plain, gzip, bzip2, xz or zstd) as a new image; print its ID."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise LayerStoreError("the --message text is not valid UTF-8; pass UTF-8 text") from None
    if parent is not None and not parent.strip():
        raise LayerStoreError("--parent needs an image ID or prefix; leave it out to import a base image")
    refuse_image_archive(file)
    if file == "-":
        source: BinaryIO = sys.stdin.buffer
        length = None
    else:
        source = open(file, "rb")  # noqa: SIM115 -- closed below
        length = os.fstat(source.fileno()).st_size if Path(file).is_file() else None
    try:
        graph = _state().graph
        parent_id = graph.resolve(parent) if parent is not None else None
        with _progress(length, "importing") as update:
            image = graph.create(cast(BinaryIO, _CountingReader(source, update)), comment=message, parent=parent_id)
    finally:
        if file != "-":
            source.close()
    click.echo(image.id)


@cli.command()
@click.argument("image")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write to FILE instead of standard output.")
def export(image: str, output: Path | None) -> None:
    """Write the layer tar of IMAGE, byte-identical to what was imported."""
    to_stdout = output is None or str(output) == "-"
    if to_stdout and sys.stdout.isatty():
        raise LayerStoreError("refusing to write a tar archive to a terminal; use -o FILE or redirect the output")
    graph = _state().graph
    img = graph.get(image)
    with _progress(img.size, "exporting") as update:
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

    def walk(parent: str | None, prefix: str) -> Iterator[str]:
        kids = children.get(parent, [])
        for n, img in enumerate(kids):
            last = n == len(kids) - 1
            branch = "└─ " if last else "├─ "
            comment = f"  {img.comment}" if img.comment else ""
            yield f"{prefix}{branch}{_short(img.id, full)}  {format_size(img.size)}{comment}"
            yield from walk(img.id, prefix + ("   " if last else "│  "))

    yield from walk(None, "")


@cli.command("ls")
@click.option("--tree", is_flag=True, help="Show images as a tree of parents and children.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-trunc", is_flag=True, help="Show full IDs.")
def ls(tree: bool, as_json: bool, no_trunc: bool) -> None:
    """List the images."""
    graph = _state().graph
    if as_json:
        _print_json([img.to_dict() for img in sorted(graph.walk_all(), key=lambda i: (i.created, i.id))])
        return
    if tree:
        for line in _tree_lines(graph, no_trunc):
            click.echo(line)
        return
    images = sorted(graph.walk_all(), key=lambda i: (i.created, i.id), reverse=True)
    width = 64 if no_trunc else 12
    click.echo(f"{'IMAGE ID':<{width}}  {'PARENT':<{width}}  {'CREATED':<23}  {'SIZE':>9}  COMMENT")
    for img in images:
        click.echo(
            f"{_short(img.id, no_trunc):<{width}}  {_short(img.parent, no_trunc):<{width}}  "
            f"{_created_text(img):<23}  {format_size(img.size):>9}  {img.comment}"
        )


@cli.command()
@click.argument("image")
def inspect(image: str) -> None:
    """Print the metadata of IMAGE (an image name or ID, or a layer) as JSON."""
    graph = _state().graph
    _print_json(inspect_image(graph, image) or graph.get(image).to_dict())


@cli.command()
@click.argument("image")
def diff(image: str) -> None:
    """List what IMAGE's layer changes against its parent (A added, C changed, D deleted)."""
    state = _state()
    img = state.graph.get(image)
    for change in state.driver.changes(img.id, img.parent):
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
def mount(image: str) -> None:
    """Make IMAGE's filesystem (an image's top layer, or a layer) visible and print its path."""
    state = _state()
    img = state.graph.get(image_layer(state.graph, image))
    path = state.driver.get(img.id)
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
    img = state.graph.get(image_layer(state.graph, image))
    if force:
        state.driver.release_all(img.id)
    else:
        state.driver.put(img.id)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Also remove images that are mounted or retained.")
@click.argument("images", nargs=-1, required=True)
def rm(force: bool, images: tuple[str, ...]) -> None:
    """Delete images (children first: an image with children is refused)."""
    graph = _state().graph
    failed = 0
    deleted: set[str] = set()
    for name in images:
        try:
            image_id = graph.resolve(name)
            if image_id in deleted:
                continue  # named twice (e.g. by ID and by prefix): deleted once
            graph.delete(image_id, force=force)
            deleted.add(image_id)
        except LayerStoreError as exc:
            if any(d.startswith(name) for d in deleted):
                continue  # a prefix of an image this command already deleted
            if len(images) == 1:
                raise
            _error_line(str(exc))
            failed += 1
            continue
        click.echo(f"deleted {image_id}")
    if failed:
        raise CommandError(f"{failed} of {len(images)} images were not deleted") from None


@cli.command()
@click.argument("image")
def digest(image: str) -> None:
    """Print the sha256 digest of IMAGE's uncompressed layer tar."""
    click.echo(_state().graph.get_digest(image))


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
    from .conformance import run_suite
    from .drivers import available_drivers
    from .errors import DriverNotFound

    installed = available_drivers()
    if name not in installed:
        raise DriverNotFound(
            f"no storage driver named {name!r}; installed drivers: {', '.join(installed) or 'none'}"
        )
    code = run_suite(name, suite_root, parse_options(suite_options), list(pytest_args), report=report)
    ctx.exit(code)


@cli.command()
def check() -> None:
    """Reassemble every layer and verify its digest; a line per layer, non-zero exit on any failure."""
    graph = _state().graph
    ids = graph.ids()
    total = 0
    failed = 0
    unverified = 0
    with _progress(sum(max(graph.get(i).size, 0) for i in ids) if _interactive() else None, "checking") as update:
        for result in graph.check(progress=update):
            total += 1
            if result.ok:
                note = "" if result.message == "ok" else result.message
                click.echo(f"ok      {result.id}  {result.actual or ''}  {note}".rstrip())
            elif result.unverified:
                unverified += 1
                click.echo(f"UNVERIFIED  {result.id}  {' '.join(result.message.split())}")
            else:
                failed += 1
                click.echo(f"FAILED  {result.id}  {' '.join(result.message.split())}")
    for description in graph.orphans():
        click.echo(f"orphan  {description} (`layerstore gc` removes it)")
    if failed:
        raise CommandError(f"{failed} of {total} layers failed the check")
    if unverified:
        raise CommandError(f"{unverified} of {total} layers could not be verified (not known to be corrupt)")
    if not total:
        click.echo("no images in the store")


@cli.command()
def gc() -> None:
    """Remove orphans: driver layers without image metadata and staging leftovers of killed processes."""
    report = _state().graph.gc()
    for layer_id in report.layers:
        click.echo(f"removed orphan layer {layer_id}")
    for name in report.staging:
        click.echo(f"removed staging leftover {name}")
    for what in report.driver:
        click.echo(f"removed {what}")
    for image_id in report.references:
        click.echo(f"released mount references of dead processes to {image_id}")
    if not report.layers and not report.staging and not report.references and not report.driver:
        click.echo("nothing to remove")


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
        _silence_stdout()
        _error_line("output closed before all data was written (broken pipe)")
        code = EXIT_BROKEN_PIPE
    except LayerStoreError as exc:
        _error_line(str(exc))
        code = 1
    except OSError as exc:
        _error_line(_os_error_message(exc, _current_root()))
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
    except (BrokenPipeError, ValueError):
        _silence_stdout()
    raise SystemExit(code)


def _current_root() -> Path | None:
    state = _last_state[0] if _last_state else None
    if state is None or state._settings is None:
        return None
    return state._settings.root


from .cli_new_driver import new_driver  # noqa: E402 - its own module, attached here

cli.add_command(new_driver)
