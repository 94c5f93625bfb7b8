"""The one way layerstore and its drivers run external commands (mount, btrfs, zfs, ...).

Every command dies with the process that started it: a layerstore killed
mid-way (SIGKILL, OOM) never leaves a ``zfs destroy`` or ``btrfs`` command
running on its own, racing the next ``gc``.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

from .errors import CommandFailed

if TYPE_CHECKING:
    import subprocess

__all__ = ["die_with_parent", "run_command"]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        return cast("Callable[..., int]", ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


# Looked up once, here: a forked child must not load libraries before exec.
_prctl = _load_prctl()


def die_with_parent(parent: int) -> None:
    """In a freshly forked child: have the kernel SIGKILL it when `parent` dies (Linux ``PR_SET_PDEATHSIG``).

    Exits at once when `parent` is already gone (it died before the request
    took effect).  Safe to call between fork and exec: it loads nothing.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


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
    exit code 127.  Standard input is `input`, or /dev/null.  The command is
    killed when this process dies (see `die_with_parent`).
    """
    import subprocess  # here: most commands (vfs, an import, an export) never run one

    full_env = None if env is None else {**os.environ, **env}
    parent = os.getpid()
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            check=False,
            preexec_fn=lambda: die_with_parent(parent),
        )
    except FileNotFoundError as exc:
        raise CommandFailed(argv, 127, f"{argv[0]}: not found ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from None
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc
