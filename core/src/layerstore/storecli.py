"""The commands about the store and its driver: info, drivers, conformance, check, gc."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .cli_state import command_state as _state
from .cli_support import (
    Stopwatch,
    emit_ids,
    emit_json,
    interactive,
    json_option,
    progress,
    quiet_option,
    summary,
)
from .errors import CommandError, LayerStoreError
from .sizes import format_size

if TYPE_CHECKING:
    from .config import Settings
    from .drivers import Driver
    from .graph import CheckResult

__all__ = ["store_commands"]


def _capabilities_record(driver: Driver) -> dict[str, Any]:
    caps = driver.capabilities
    return {
        "native_diff": caps.native_diff, "quota": caps.quota, "idmap": caps.idmap,
        "read_only_layers": caps.read_only_layers, "reflink": caps.reflink, "max_depth": caps.max_depth,
    }


@click.command()
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
    import shutil

    from .drivers import load_driver

    try:
        driver = load_driver(name, probe / name, settings.options_for(name, selected=selected), settings.id_maps)
    except LayerStoreError as exc:
        return str(exc).replace(str(probe / name), str(settings.root / name))
    with contextlib.suppress(LayerStoreError, OSError):
        driver.cleanup()
    shutil.rmtree(probe / name, ignore_errors=True)
    return None


@click.command()
@json_option
def drivers(as_json: bool) -> None:
    """List installed drivers and whether each can run on this store's filesystem."""
    import shutil
    import tempfile

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


@click.command(context_settings={"ignore_unknown_options": True})
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
    from .discovery import available_drivers, no_such_driver

    try:
        import pytest  # noqa: F401 -- only to tell whether the suite can run
    except ImportError:
        raise LayerStoreError("the conformance suite needs pytest, which is not installed: "
                              "pip install 'layerstore[conformance]'") from None
    from .conformance import run_suite

    if name not in available_drivers():
        raise no_such_driver(name)
    code = run_suite(name, suite_root, parse_options(suite_options), list(pytest_args), report=report)
    ctx.exit(code)


@click.command()
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


@click.command()
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
        from .images.records import IMAGES_DIR, ImageRecords

        report = graph.gc()
        layers, staging, locks, references = report.layers, report.staging, report.locks, report.references
        driver = report.driver
        staging += tuple(f"{IMAGES_DIR}/{name}" for name in ImageRecords(graph.root / IMAGES_DIR).sweep(records=True))
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


def store_commands() -> list[click.Command]:
    """The commands of this module, for the ``cli`` group."""
    return [info, drivers, conformance, check, gc]
