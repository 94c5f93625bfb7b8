"""The registry commands of ``layerstore``: pull, push, login, logout.

`registry_commands` returns them for the ``cli`` group.  Credentials are
read from and written to the files Podman and Docker use (see
`layerstore.registry.credentials`) and never printed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import click

from .errors import LayerStoreError
from .imagecli import MAKE_AN_IMAGE, refusing_layer
from .sizes import format_size

if TYPE_CHECKING:
    from .graph import Graph
    from .images.descriptor import Descriptor
    from .images.store import ImageStore
    from .images.transport import TransferProgress
    from .registry.client import RegistryOptions

__all__ = ["registry_commands"]


def _store() -> ImageStore:
    from .images.store import ImageStore

    graph = cast("Graph", click.get_current_context().find_root().obj.graph)
    return ImageStore(graph)


def _options(insecure: bool, ca_file: str | None, retries: int) -> RegistryOptions:
    from .registry.client import RegistryOptions

    return RegistryOptions(insecure=insecure, ca_file=ca_file, retries=retries)


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _connection_options(function: Any) -> Any:
    function = click.option("--retries", type=click.IntRange(0, 100), default=6, show_default=True,
                            help="Retries of connection errors and server errors, with backoff.")(function)
    function = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                            help="Also trust the CAs in this PEM file.")(function)
    return click.option("--insecure", is_flag=True,
                        help="Allow plain HTTP and TLS certificates that do not verify.")(function)


class _LineProgress:
    """On a terminal: one line per layer (bytes and rate when done), updated in place while it moves."""

    def __init__(self) -> None:
        from .images.transport import TransferProgress

        self._base = TransferProgress()
        self._current: tuple[str, int, int, float] | None = None

    def blob_started(self, descriptor: Descriptor, *, reused: bool) -> None:
        name = descriptor.digest.partition(":")[2][:12]
        if reused:
            click.echo(f"{name}: already there", err=True)
            return
        self._current = (name, descriptor.size, 0, time.monotonic())

    def blob_advanced(self, descriptor: Descriptor, nbytes: int) -> None:
        if self._current is None:
            return
        name, size, done, started = self._current
        done += nbytes
        self._current = (name, size, done, started)
        total = f" of {format_size(size)}" if size else ""
        click.echo(f"\r{name}: {format_size(done)}{total}\x1b[K", err=True, nl=False)

    def blob_finished(self, descriptor: Descriptor) -> None:
        if self._current is None:
            return
        name, _, done, started = self._current
        self._current = None
        seconds = max(time.monotonic() - started, 1e-6)
        click.echo(f"\r{name}: {format_size(done)} in {seconds:.1f} s ({format_size(int(done / seconds))}/s)\x1b[K",
                   err=True)


def _progress(quiet: bool) -> TransferProgress | None:
    return cast("TransferProgress", _LineProgress()) if _tty() and not quiet else None


@click.command()
@click.argument("name", metavar="NAME[:TAG|@DIGEST]")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Image to pick from a multi-platform index.")
@click.option("-j", "--jobs", type=click.IntRange(1, 32), default=3, show_default=True,
              help="Blobs downloaded in parallel.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_connection_options
def pull(name: str, *, platform: str | None, jobs: int, quiet: bool, as_json: bool, insecure: bool,
         ca_file: str | None, retries: int) -> None:
    """Pull an image from a registry (Docker Hub when NAME has no registry)."""
    from .images.descriptor import Platform
    from .registry.transfer import pull as pull_image

    try:
        chosen = Platform.parse(platform) if platform else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None
    store = _store()
    before = set(store.graph.ids())
    result = pull_image(store, name, options=_options(insecure, ca_file, retries), platform=chosen, jobs=jobs,
                        progress=_progress(quiet or as_json))
    image = result.image
    if as_json:
        from .imagecli import image_layers_json

        added = [layer for layer in image.layers if layer not in before]
        click.echo(json.dumps({
            "reference": result.reference, "id": image.digest, "manifest_digest": image.manifest_digest,
            "index_digest": image.index_digest, "layers": image_layers_json(store.graph, image, added),
            "layers_fetched": result.layers_fetched, "layers_reused": result.layers_reused,
            "bytes": result.bytes, "seconds": round(result.seconds, 3),
        }, indent=2))
        return
    if not quiet:
        click.echo(f"pulled {result.reference}: {result.layers_fetched} layers fetched, {result.layers_reused} "
                   f"reused, {format_size(result.bytes)} in {result.seconds:.1f} s", err=True)
    click.echo(image.digest)


@click.command()
@click.argument("image", metavar="NAME|ID")
@click.argument("destination", metavar="[DEST]", required=False)
@click.option("--compress", type=click.Choice(["gzip", "zstd", "none"]), default="gzip", show_default=True,
              help="Compression of the uploaded layers.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the manifest digest.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_connection_options
def push(image: str, destination: str | None, *, compress: str, quiet: bool, as_json: bool, insecure: bool,
         ca_file: str | None, retries: int) -> None:
    """Push a stored image to a registry (to DEST, default its own NAME)."""
    from .registry.transfer import push as push_image

    if destination is None and not any(c in image for c in "/:") and len(image) >= 12:
        raise LayerStoreError(f"{image!r} looks like an image ID; name the destination: "
                              f"layerstore push {image} REGISTRY/REPOSITORY[:TAG]")
    store = _store()
    with refusing_layer(store.graph, image, MAKE_AN_IMAGE + " to push"):
        result = push_image(store, image, destination, options=_options(insecure, ca_file, retries),
                            compress=compress, progress=_progress(quiet or as_json))
    if as_json:
        click.echo(json.dumps({
            "reference": result.reference, "id": result.image_digest, "manifest_digest": result.manifest_digest,
            "blobs_uploaded": result.blobs_uploaded, "blobs_mounted": result.blobs_mounted,
            "blobs_present": result.blobs_present, "bytes": result.bytes, "seconds": round(result.seconds, 3),
        }, indent=2))
        return
    if not quiet:
        click.echo(f"pushed {result.reference}: {result.blobs_uploaded} blobs uploaded, {result.blobs_mounted} "
                   f"mounted, {result.blobs_present} already there, {format_size(result.bytes)} in "
                   f"{result.seconds:.1f} s", err=True)
    click.echo(result.manifest_digest)


def _registry_name(registry: str) -> str:
    from .images.reference import DEFAULT_REGISTRY

    host = registry.split("://", 1)[-1].split("/", 1)[0]
    if not host:
        raise click.BadParameter(f"{registry!r} is not a registry host[:port]", param_hint="REGISTRY")
    return DEFAULT_REGISTRY if host in ("index.docker.io", "registry-1.docker.io") else host


@click.command()
@click.argument("registry", required=False, default="docker.io")
@click.option("-u", "--username", help="User name (prompted on a terminal when missing).")
@click.option("-p", "--password", help="Password (visible to other users in the process list: prefer "
                                      "--password-stdin or the prompt).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_connection_options
def login(registry: str, *, username: str | None, password: str | None, password_stdin: bool, insecure: bool,
          ca_file: str | None, retries: int) -> None:
    """Check credentials with REGISTRY (default docker.io) and save them for pull and push."""
    from .registry.client import RegistryClient, RegistryOptions
    from .registry.credentials import Credentials, store_credentials

    host = _registry_name(registry)
    if password_stdin:
        if password is not None:
            raise click.UsageError("--password and --password-stdin exclude each other")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise click.UsageError("no user name: pass --username")
        username = click.prompt("Username", err=True)
    if password is None:
        if not sys.stdin.isatty():
            raise click.UsageError("no password: pass --password-stdin (or --password)")
        password = click.prompt("Password", hide_input=True, err=True)
    if not username or not password:
        raise click.UsageError("the user name and the password must not be empty")
    credentials = Credentials(username, password)
    options = RegistryOptions(insecure=insecure, ca_file=ca_file, retries=retries, credentials=credentials)
    with RegistryClient(host, options) as client:
        client.authenticate("")
    path = store_credentials(host, credentials)
    click.echo(f"Login Succeeded (credentials for {host} saved in {path})")


@click.command()
@click.argument("registry", required=False, default="docker.io")
def logout(registry: str) -> None:
    """Remove the saved credentials of REGISTRY (default docker.io) from every credential file read."""
    from .registry.credentials import remove_credentials

    host = _registry_name(registry)
    changed = remove_credentials(host)
    if not changed:
        raise LayerStoreError(f"not logged in to {host}")
    click.echo(f"Removed login credentials for {host}")


def registry_commands() -> list[click.Command]:
    """The commands this module adds to the ``layerstore`` group."""
    return [pull, push, login, logout]
