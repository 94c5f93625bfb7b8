"""layerstore.process: commands show in errors, and never outlive a killed layerstore."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from layerstore.errors import CommandFailed
from layerstore.process import run_command


def test_failure_names_the_command() -> None:
    with pytest.raises(CommandFailed, match=r"command failed \(3\): sh -c echo oops >&2; exit 3: oops"):
        run_command(["sh", "-c", "echo oops >&2; exit 3"])


def test_command_dies_with_a_killed_parent(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # The parent runs a long command (as a zfs destroy would be) and is SIGKILLed meanwhile.
    script = (
        "import os, threading, time\n"
        "from layerstore.process import run_command\n"
        f"pidfile = {str(pidfile)!r}\n"
        "threading.Thread(target=run_command, args=(['sh', '-c', f'echo $$ > {pidfile}.tmp; "
        "mv {pidfile}.tmp {pidfile}; exec sleep 600'],), daemon=True).start()\n"
        "while not os.path.exists(pidfile):\n"
        "    time.sleep(0.01)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -9, result.stderr
    child = int(pidfile.read_text())
    try:
        pidfd = os.pidfd_open(child)
    except ProcessLookupError:
        return  # already gone
    try:
        # A guard against hanging the run if the command survives, not a speed limit.
        exited, _, _ = select.select([pidfd], [], [], 60)
        if not exited:
            os.kill(child, signal.SIGKILL)
        assert exited, "the command outlived the killed layerstore process"
    finally:
        os.close(pidfd)
