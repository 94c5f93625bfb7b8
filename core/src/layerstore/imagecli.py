"""The image commands of ``layerstore``: load, save, images, tag, untag, rmi, and image-aware inspect/mount.

`image_commands` returns them for the ``cli`` group; `image_layer` and
`inspect_image` are the hooks ``mount`` and ``inspect`` use to accept image
names beside layer IDs.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from .errors import ImageNotFound, InvalidArchive, LayerStoreError

if TYPE_CHECKING:
    from .graph import Graph
    from .images.descriptor import Descriptor, Platform
    from .images.store import ImageStore, StoredImage
    from .images.transport import ImageSource

__all__ = [
    "MAKE_AN_IMAGE",
    "image_commands",
    "image_layer",
    "image_layers_json",
    "inspect_image",
    "refuse_image_archive",
    "refusing_layer",
]


def _graph() -> Graph:
    return cast("Graph", click.get_current_context().find_root().obj.graph)


def _store() -> ImageStore:
    from .images.store import ImageStore

    return ImageStore(_graph())


def _platform(text: str | None) -> Platform | None:
    from .images.descriptor import Platform

    if text is None:
        return None
    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None


def _stored_image(graph: Graph, name: str) -> StoredImage | None:
    from .images.store import ImageStore

    try:
        return ImageStore(graph).get(name)
    except ImageNotFound:
        return None


def image_layer(graph: Graph, name: str) -> str:
    """The layer ID `name` means: an image's top layer (by name or image ID), else a layer ID, prefix or digest."""
    image = _stored_image(graph, name)
    if image is not None and image.top_layer is not None:
        return image.top_layer
    return graph.resolve(name)


def _layer_size(graph: Graph, layer: str) -> int:
    try:
        return int((graph.image_root(layer) / "layersize").read_text())
    except (OSError, ValueError):
        return 0


def _image_size(graph: Graph, image: StoredImage) -> int:
    return sum(_layer_size(graph, layer) for layer in image.layers)


def inspect_image(graph: Graph, name: str) -> dict[str, Any] | None:
    """What ``inspect`` prints for an image (None when `name` is no image): config essentials, history, layers."""
    from .images.store import ImageStore

    image = _stored_image(graph, name)
    if image is None:
        return None
    config = ImageStore(graph).config_json(image.id)
    run = config.get("config") or {}
    return {
        "id": image.digest,
        "names": list(image.names),
        "manifest_digest": image.manifest_digest,
        "manifest_media_type": image.manifest_media_type,
        "index_digest": image.index_digest,
        "config_locations": list(image.config_locations),
        "created": image.created or None,
        "architecture": config.get("architecture"),
        "os": config.get("os"),
        "size": _image_size(graph, image),
        "config": {
            "env": run.get("Env"),
            "cmd": run.get("Cmd"),
            "entrypoint": run.get("Entrypoint"),
            "working_dir": run.get("WorkingDir") or None,
            "user": run.get("User") or None,
            "labels": run.get("Labels"),
        },
        "history": [
            {"created": h.get("created"), "created_by": h.get("created_by"), "comment": h.get("comment"),
             "empty_layer": bool(h.get("empty_layer", False))}
            for h in config.get("history") or []
        ],
        "layers": image_layers_json(graph, image),
    }


def image_layers_json(graph: Graph, image: StoredImage, added: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The layers of `image`, bottom first, as every ``--json`` output shows them.

    Each is ``{"id": <layer ID, 64 hex, as ``mount`` and ``ls`` take it>,
    "chain_id": "sha256:…", "diff_id": "sha256:…", "size": <bytes>,
    "blobs": [<the recorded compressed forms and where they are known>]}``,
    plus ``"added": <bool>`` (stored by this command, not reused) when
    `added` is given.
    """
    from .images.layers import layer_blobs

    rows = []
    for layer, diff_id in zip(image.layers, image.diff_ids, strict=True):
        row: dict[str, Any] = {"id": layer, "chain_id": "sha256:" + layer, "diff_id": diff_id,
                               "size": _layer_size(graph, layer),
                               "blobs": [b.to_json() for b in layer_blobs(graph, layer)]}
        if added is not None:
            row["added"] = layer in added
        rows.append(row)
    return rows


class _TerminalProgress:
    """One progress bar per layer on stderr while it is a terminal."""

    def __init__(self, label: str) -> None:
        from .images.transport import TransferProgress

        self._base = TransferProgress()
        self._label = label
        self._bar: Any = None

    def blob_started(self, descriptor: Descriptor, *, reused: bool) -> None:
        name = descriptor.digest.partition(":")[2][:12]
        if reused:
            click.echo(f"{name}: already stored", err=True)
            return
        length = descriptor.size or None
        self._bar = click.progressbar(length=length, label=f"{self._label} {name}", file=sys.stderr)
        self._bar.__enter__()

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def blob_finished(self, descriptor: Descriptor) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)


def _progress(label: str) -> Any:
    from .images.transport import TransferProgress

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return _TerminalProgress(label) if tty else TransferProgress()


@contextlib.contextmanager
def _input_path(graph: Graph, name: str) -> Iterator[tuple[Path, str | None]]:
    """The archive to read and its name for messages: a path as given, or standard input (decompressed)
    spooled to a file in the store."""
    if name != "-":
        yield Path(name), None
        return
    import tempfile

    from .images._archivefiles import copy_decompressed

    # An unnamed file: the start-up sweep of another command on this store (``save | load`` starts both at
    # once) cannot see it, and a killed load leaves nothing.  It is opened again by its descriptor's name.
    with tempfile.TemporaryFile(dir=graph.tmp_dir) as spool:
        copy_decompressed(sys.stdin.buffer, spool, "standard input")
        spool.flush()
        yield Path(f"/proc/self/fd/{spool.fileno()}"), "standard input"


@click.command()
@click.option("-i", "--input", "input_", default="-", metavar="FILE|DIR|-",
              help="docker-archive or OCI layout (tar or directory); default standard input.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Image to pick from a multi-platform index.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image IDs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def load(input_: str, platform: str | None, quiet: bool, as_json: bool) -> None:
    """Load images from a docker-archive or an OCI image layout (auto-detected)."""
    from .images.archives import open_sources

    chosen = _platform(platform)
    graph = _graph()
    store = _store()
    results = []
    with _input_path(graph, input_) as (path, label):
        sources = open_sources(path, spool_dir=graph.tmp_dir, label=label)
        try:
            for source in sources:
                before = set(graph.ids())
                image = store.load(source, platform=chosen, progress=_progress("loading"))
                added = [layer for layer in image.layers if layer not in before]
                results.append((image, added, _archive_names(source)))
        finally:
            for source in sources:
                source.close()
    if as_json:
        click.echo(json.dumps([{"id": image.digest, "names": list(image.names),
                                "manifest_digest": image.manifest_digest,
                                "layers": image_layers_json(graph, image, added)} for image, added, _ in results],
                              indent=2))
        return
    for image, _, loaded_names in results:
        if quiet:
            click.echo(image.digest)
        elif loaded_names:
            for name in loaded_names:
                click.echo(f"Loaded image: {name}")
        else:
            click.echo(f"Loaded image ID: {image.digest}")


def _archive_names(source: ImageSource) -> list[str]:
    """The names the archive gives its image, as stored (``docker load`` reports those, not names given before)."""
    from .images.reference import parse_reference

    return list(dict.fromkeys(str(parse_reference(name)) for name in source.names()))


@click.command()
@click.argument("images", nargs=-1, required=True, metavar="NAME|ID...")
@click.option("-o", "--output", type=click.Path(allow_dash=True, path_type=Path),
              help="Archive file or directory (default: standard output, unless it is a terminal).")
@click.option("--format", "fmt", type=click.Choice(["docker-archive", "oci", "oci-dir"]), default="docker-archive",
              show_default=True, help="docker-archive tar, OCI layout tar, or OCI layout directory.")
@click.option("--compress", type=click.Choice(["none", "gzip", "zstd"]), default="none", show_default=True,
              help="Compression of the layers.")
def save(images: tuple[str, ...], output: Path | None, fmt: str, compress: str) -> None:
    """Save images (or layer chains made by `import`) to a docker-archive or an OCI image layout.

    Layers are the bytes that were loaded; nothing is left at the output when it fails.
    """
    from .images.archives import open_destination

    if output is None or str(output) == "-":
        if fmt == "oci-dir":
            raise LayerStoreError("--format oci-dir writes a directory: name it with -o DIR")
        if sys.stdout.isatty():
            raise LayerStoreError("refusing to write an image archive to a terminal; use -o FILE or redirect it")
        sys.stdout.flush()
        output = Path("/dev/stdout")
    store = _store()
    destination = open_destination(output, fmt, journal=store.graph.output_journal)
    store.save(list(images), destination, compress=compress, progress=_progress("saving"))


def _row(graph: Graph, image: StoredImage, name: str | None) -> dict[str, Any]:
    from .images.reference import parse_reference

    ref = parse_reference(name) if name else None
    return {
        "id": image.digest,
        "name": name,
        "repository": ref.name if ref else None,
        "tag": ref.tag if ref else None,
        "digest": image.manifest_digest,
        "created": image.created or None,
        "size": _image_size(graph, image),
        "layer_count": len(image.layers),
    }


@click.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Print only image IDs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-trunc", is_flag=True, help="Show full IDs.")
def images_(quiet: bool, as_json: bool, no_trunc: bool) -> None:
    """List the images: name, image ID, created, size."""
    from .images.store import ImageStore
    from .sizes import format_size

    graph = click.get_current_context().find_root().obj.existing_graph()  # reading creates no store
    stored = ImageStore(graph).images() if graph is not None else []
    rows = [_row(graph, image, name) for image in stored for name in (image.names or (None,))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if quiet:
        for image in stored:
            click.echo(image.digest if no_trunc else image.id[:12])
        return
    click.echo(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<14} {'CREATED':<22} SIZE")
    for row in rows:
        image_id = row["id"] if no_trunc else row["id"][7:19]
        created = (row["created"] or "")[:19].replace("T", " ")
        click.echo(f"{row['repository'] or '<none>':<40} {row['tag'] or '<none>':<16} {image_id:<14} "
                   f"{created:<22} {format_size(row['size'])}")


@click.command()
@click.argument("source", metavar="SRC")
@click.argument("name", metavar="NAME")
def tag(source: str, name: str) -> None:
    """Give the image SRC the name NAME (repo[:tag])."""
    store = _store()
    with refusing_layer(store.graph, source, MAKE_AN_IMAGE + " to tag"):
        store.tag(source, name)


MAKE_AN_IMAGE = "`layerstore save {layer} | layerstore load` makes an image of it (and its parents)"
"""The way from a layer made by ``import`` to an image (a `refusing_layer` remedy)."""


@contextlib.contextmanager
def refusing_layer(graph: Graph, name: str, remedy: str) -> Iterator[None]:
    """Turn the block's `ImageNotFound` for `name` into one saying that `name` is a layer's ID, when it is one
    (``import`` makes layers), with `remedy` (``{layer}`` for the layer's short ID) as the way out."""
    try:
        yield
    except ImageNotFound:
        layer: str | None = None
        with contextlib.suppress(LayerStoreError):
            layer = graph.resolve(name)
        if layer is None:
            raise
        raise ImageNotFound(f"{name!r} is a layer (`layerstore ls`), not an image (`layerstore images`); "
                            + remedy.format(layer=layer[:12])) from None


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def untag(names: tuple[str, ...]) -> None:
    """Remove names from images (the images stay)."""
    store = _store()
    for name in names:
        click.echo(f"Untagged: {store.untag(name)}")


@click.command()
@click.argument("images", nargs=-1, required=True, metavar="NAME|ID...")
def rmi(images: tuple[str, ...]) -> None:
    """Remove images and every layer of theirs that no other image or child layer uses.

    As with docker and podman, a name of an image that has other names only
    loses that name; an ID (or the last name) removes the image.
    """
    from .images.reference import parse_reference

    store = _store()
    for name in images:
        with refusing_layer(store.graph, name, "`layerstore rm {layer}` deletes a layer"):
            image = store.get(name)
        ref: str | None = None
        with contextlib.suppress(LayerStoreError):  # an ID or a prefix of one is no reference
            ref = str(parse_reference(name))
        if ref is not None and ref in image.names and len(image.names) > 1:
            # Only the untag may happen here: if the name went meanwhile, that is an error, not a removal.
            click.echo(f"Untagged: {store.untag(ref)}")
            continue
        removed = store.remove(image.id)
        click.echo(f"Deleted: {image.digest}")
        for layer in removed:
            click.echo(f"Deleted layer: {layer}")


def image_commands() -> list[click.Command]:
    """The commands this module adds to the ``layerstore`` group."""
    return [load, save, images_, tag, untag, rmi]


def refuse_image_archive(path: str) -> None:
    """Raise `InvalidArchive` when `path` is an image archive (``import`` takes single layer tars only)."""
    from .images.archives import is_image_archive

    candidate = Path(path)
    if path == "-" or not (candidate.is_dir() or _is_plain_tar(candidate)):
        return
    if is_image_archive(candidate):
        raise InvalidArchive(f"{path}: this is an image archive; use `layerstore load -i {path}`")


def _is_plain_tar(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(257)
            return f.read(5) == b"ustar"
    except OSError:
        return False


