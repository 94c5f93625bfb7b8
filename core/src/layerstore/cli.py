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
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from . import __version__
from .cli_state import CommandState, image_record
from .cli_state import error_line as _error_line
from .cli_support import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
)
from .errors import LayerStoreError
from .imagecli import image_commands
from .layercli import layer_commands
from .registrycli import registry_commands
from .storecli import store_commands

if TYPE_CHECKING:
    pass

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


def _os_error_message(exc: OSError, root: Path | None = None) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or root or "the store"
        return f"no space left on {where}; free space and retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {exc.filename or exc}; run as a user who may write the store, or choose --root"
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return exc.strerror or str(exc)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None
        except BrokenPipeError:
            raise _BrokenPipe() from None
        except OSError as exc:
            state = ctx.find_object(CommandState)
            raise _StoreOSError(exc, state.resolved_root if state is not None else None) from exc

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.epilog is None:  # made on demand: it needs the config module, which only --help should pay for
            self.epilog = _epilog()
        super().format_epilog(ctx, formatter)


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    state = CommandState(root, driver, options, config)
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in [*layer_commands(), *store_commands()]:
    cli.add_command(_command)
for _command in image_commands():  # load, save, images, tag, untag, rmi
    cli.add_command(_command)
for _command in registry_commands():  # pull, push, login, logout
    cli.add_command(_command)


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


def run() -> NoReturn:
    """Entry point of the installed ``layerstore`` command: `main`, then an immediate process exit.

    By the time `main` ends, every command has closed what it opened (stores,
    temporary files, mounts it does not keep, worker processes) and its output
    is flushed; what is left is the interpreter's teardown, which frees every
    module and object one by one (measured at 25-40 ms after an import, a
    fifth of a small command).  `os._exit` skips it, except under a profiler
    or tracer (cProfile, coverage), whose results are written at exit.
    Called from Python, `main` still ends with `SystemExit` and leaves the
    interpreter alone.
    """
    try:
        main()
    except SystemExit as exc:
        if sys.getprofile() is not None or sys.gettrace() is not None:
            raise
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C after main's own handling, while it exits
        code = EXIT_INTERRUPTED
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


from .cli_new_driver import new_driver  # noqa: E402 - its own module, attached here

cli.add_command(new_driver)
