"""Process identity that survives PID reuse: a process ID together with its start time.

Whatever a process leaves on disk for as long as it lives (a mount
reference, a temporary output file) is tagged with `current_owner()`; anyone
can later ask `owner_alive(tag)` and reap what a dead (e.g. SIGKILLed)
process left.  The start time (``/proc/<pid>/stat`` field 22, clock ticks
since boot) tells a recycled process ID from the original process.
"""

from __future__ import annotations

import os

__all__ = ["current_owner", "owner_alive", "start_time"]

_own: dict[int, str] = {}  # pid -> tag: recomputed in a forked child


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time) of process `pid` from ``/proc/<pid>/stat``; None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 and 22 of the whole line
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot; None when there is no such process."""
    found = _stat(pid)
    return None if found is None else found[1]


def current_owner() -> str:
    """This process's tag, ``<pid>-<start time>`` (recomputed after a fork)."""
    pid = os.getpid()
    tag = _own.get(pid)
    if tag is None:
        tag = _own[pid] = f"{pid}-{start_time(pid) or 0}"
    return tag


def owner_alive(tag: str) -> bool:
    """True when the process tagged `tag` (from `current_owner`) still runs; False for a malformed tag."""
    pid_text, _, start_text = tag.partition("-")
    try:
        pid, started = int(pid_text), int(start_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    found = _stat(pid)
    # A zombie has exited: what it held is as dead as it is.
    return found is not None and found[1] == started and found[0] not in (b"Z", b"X")
