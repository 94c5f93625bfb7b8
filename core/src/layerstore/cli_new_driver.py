"""The ``layerstore new-driver NAME DIR`` command (attached to the `layerstore.cli` group)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["new_driver"]


@click.command("new-driver")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def new_driver(name: str, directory: Path) -> None:
    """Write a new driver distribution NAME into DIRECTORY (new or empty) that certifies as generated.

    It holds a pyproject with the entry point, a driver module built on
    layerstore.kit, a conformance test module and a README.  Then:
    `pip install -e DIRECTORY && layerstore conformance NAME --root DIR-ON-BACKEND`.
    """
    from .newdriver import write_driver

    for path in write_driver(name, directory):
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install -e {directory} && layerstore conformance {name} --root DIR-ON-YOUR-BACKEND")
