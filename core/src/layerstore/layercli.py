"""The commands about single layers: import, export, ls, inspect, diff, mount, umount, exists, rm, digest."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import click

from .cli_state import command_state as _state
from .cli_state import created_text as _created_text
from .cli_state import digest_or_none as _digest_or_none
from .cli_state import error_line as _error_line
from .cli_state import image_record
from .cli_state import short_id as _short
from .cli_support import (
    Stopwatch,
    emit_ids,
    emit_json,
    json_option,
    progress,
    quiet_option,
    summary,
)
from .counting import CountingReader as _CountingReader
from .errors import CommandError, ImageNotFound, LayerStoreError
from .imagecli import image_layer, inspect_image, refuse_image_archive
from .sizes import format_size

if TYPE_CHECKING:
    from .graph import Graph
    from .image import Image

__all__ = ["layer_commands"]


@click.command("import")
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


@click.command()
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


@click.command("ls")
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
        records = []
        for img in images:
            try:
                digest = _digest_or_none(cast("Graph", graph), img.id)
            except ImageNotFound:
                continue  # removed by a concurrent `rm` since the listing: it is not in the store any more
            records.append(image_record(img, digest))
        emit_json(records)
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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
@click.argument("image")
def exists(image: str) -> None:
    """Exit 0 when IMAGE (an ID or unique prefix) is in the store, 1 when it is not; print nothing."""
    graph = _state().existing_graph()
    if graph is None or not graph.exists(image):
        raise click.exceptions.Exit(1)


@click.command()
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


@click.command()
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


def layer_commands() -> list[click.Command]:
    """The commands of this module, for the ``cli`` group."""
    return [import_, export, ls, inspect, diff, mount, umount, exists, rm, digest]
