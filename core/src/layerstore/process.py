"""The one way layerstore and its drivers run external commands (mount, btrfs, zfs, ...)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from .errors import CommandFailed

__all__ = ["run_command"]


def run_command(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` without a shell, capturing stdout and stderr.

    With `check` (the default) a non-zero exit raises `CommandFailed` showing
    the command and its stderr; a missing program raises `CommandFailed` with
    exit code 127.  Standard input is `input`, or /dev/null.
    """
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(argv, 127, f"{argv[0]}: not found ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from None
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc
