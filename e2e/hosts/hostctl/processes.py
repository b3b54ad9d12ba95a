"""Processes by pid, told apart across pid reuse by their start time, and stopped for sure."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .errors import HostctlError

STOP_TIMEOUT = 5.0


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot; with the pid it identifies a process across pid reuse."""
    fields = _proc_stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int | None, start_time: int | None = None) -> bool:
    """True while the process exists and is not a zombie (and is the one that started at start_time)."""
    if not pid:
        return False
    fields = _proc_stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def reap_if_child(pid: int) -> None:
    """In-process callers (pytest) are the parent of their supervisor: collect it, leave no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_processes(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL what is left; raise if something survives even that."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if is_running(pid)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            for pid in alive:
                reap_if_child(pid)
            alive = [pid for pid in alive if is_running(pid)]
            if alive:
                time.sleep(0.02)
        if not alive:
            return
    raise HostctlError(f"processes {alive} survived SIGKILL for {timeout:g}s")


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
