"""Locks between hostctl processes: parallel runs share addresses, users and the registry."""
from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

from .errors import HostctlError
from .paths import REGISTRY_DIR

LOCK_TIMEOUT = 120.0


class FileLock:
    """An flock on a file, re-entrant within a process (gc runs inside up's critical section)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0
        self._file = None

    def __enter__(self) -> "FileLock":
        self._mutex.acquire()
        if self._depth == 0:
            try:
                self._file = self._acquire()
            except BaseException:
                self._mutex.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
        self._mutex.release()

    def _acquire(self):
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        f = open(self.path, "a")
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.close()
                    raise HostctlError(f"timed out after {LOCK_TIMEOUT:g}s waiting for lock {self.path}")
                time.sleep(0.05)


GLOBAL_LOCK_FILE = REGISTRY_DIR / "lock"

# Serialises address allocation, registry changes, useradd/userdel and teardown across processes.
GLOBAL_LOCK = FileLock(GLOBAL_LOCK_FILE)
