"""Commands, bounded waits and file writes every other module builds on; errors stay one line."""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from .errors import HostctlError

COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 30.0  # for a process of the run to come up


def one_line(text: str, limit: int = 400) -> str:
    """Collapse output to a single line, so every error stays one line."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run(argv: list[str], *, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion; on failure raise HostctlError naming it and its stderr."""
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise HostctlError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise HostctlError(f"{shlex.join(argv)}: timed out after {timeout:g}s") from None
    if check and proc.returncode != 0:
        detail = one_line(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
        raise HostctlError(f"{shlex.join(argv)}: {detail}")
    return proc


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; bounded by `timeout` seconds.

    Predicates that can tell the wait is hopeless (a process died) raise HostctlError themselves.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise HostctlError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Readers (tests, the Rust side) never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)


def last_line_of(*paths: Path) -> str:
    """The last non-empty line of the first of these logs that has one, to explain why a process died."""
    for path in paths:
        with contextlib.suppress(OSError):
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return one_line(lines[-1])
    return "no output in " + ", ".join(str(p) for p in paths)


def require_root() -> None:
    if os.geteuid() != 0:
        raise HostctlError("must run as root (network namespaces, sshd, useradd)")
