"""The per-run supervisor: a child subreaper that spawns the run's processes and reaps all of them.

PID 1 on these machines does not reap, so without it every process of the run, and every orphan
sshd leaves behind, would stay a zombie. It also tears the run down when the run's owner dies.
This module holds both sides: the supervisor process and the calls other hostctl processes make to it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import HostctlError
from .paths import HOSTCTL, REGISTRY_DIR
from .processes import is_running, process_start_time, reap_if_child, stop_processes
from .registry import RunRecord, owner_alive, read_record, supervisor_socket, write_record
from .util import READY_TIMEOUT, last_line_of, one_line, wait_until

PR_SET_CHILD_SUBREAPER = 36
OWNER_POLL_INTERVAL = 1.0

CHILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class Supervisor:
    """Serves spawn requests on a root-only Unix socket, one JSON line each way.

    Requests: {"op": "ping"}, {"op": "spawn", "argv": [...], "env": {...}, "log": path},
    {"op": "exit_code", "pid": N} (null while running or unknown).
    """

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.children: set[int] = set()
        self.exit_codes: dict[int, int] = {}
        self.stopping: asyncio.Event | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        path = supervisor_socket(self.record.run_id)
        path.unlink(missing_ok=True)
        old_umask = os.umask(0o077)  # the socket spawns processes as root: root only
        try:
            server = await asyncio.start_unix_server(self.handle, path=str(path))
        finally:
            os.umask(old_umask)
        watcher = asyncio.create_task(self.watch_owner())
        ticker = asyncio.create_task(self.reap_periodically())
        await self.stopping.wait()
        server.close()
        watcher.cancel()
        ticker.cancel()
        await self.stop_children()

    def reap(self) -> None:
        """Collect every exited child, ours or an orphan reparented to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.discard(pid)
                self.exit_codes[pid] = os.waitstatus_to_exitcode(status)

    async def reap_periodically(self) -> None:
        # SIGCHLD can coalesce; a slow tick makes sure nothing stays a zombie for long.
        while True:
            await asyncio.sleep(1.0)
            self.reap()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            reply = self.dispatch(json.loads(line))
        except Exception as e:  # reported to the client, which raises it as HostctlError
            reply = {"error": one_line(f"{type(e).__name__}: {e}")}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    def dispatch(self, request: dict) -> dict:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "spawn":
            return {"pid": self.spawn(request["argv"], request.get("env", {}), request["log"])}
        if op == "exit_code":
            return {"exit_code": self.exit_codes.get(request["pid"])}
        raise ValueError(f"unknown op {op!r}")

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> int:
        executable = shutil.which(argv[0], path=CHILD_ENV["PATH"]) or argv[0]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        # Python ignores SIGPIPE and SIGXFSZ; a child must get the defaults back (as Popen does).
        pid = os.posix_spawn(executable, argv, {**CHILD_ENV, **env}, file_actions=actions, setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD))
        self.children.add(pid)
        return pid

    async def watch_owner(self) -> None:
        """If the run's owner dies without `down`, nobody else will clean up: do it ourselves."""
        state_dir = Path(self.record.state_dir)
        while owner_alive(self.record) and state_dir.is_dir():
            await asyncio.sleep(OWNER_POLL_INTERVAL)
        # A separate process: teardown runs subprocesses, whose exit statuses our waitpid(-1)
        # would steal if they were our own children.
        log = REGISTRY_DIR / f"{self.record.run_id}.teardown.log"
        pid = self.spawn([sys.executable, str(HOSTCTL), "_teardown", "--run-id", self.record.run_id], {}, str(log))
        deadline = time.monotonic() + 120
        while pid not in self.exit_codes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.exit_codes.get(pid) == 0:
            log.unlink(missing_ok=True)  # kept only to explain a failure
        self.stopping.set()

    async def stop_children(self) -> None:
        """Last line of defence against strays: end what we spawned that is still running."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            for _ in range(30):
                self.reap()
                if not self.children:
                    return
                await asyncio.sleep(0.1)


def supervise(run_id: str) -> None:
    """Entry point of the hidden `_supervise` subcommand."""
    record = read_record(run_id)
    if record is None:
        raise HostctlError(f"no registry record for run {run_id}")
    os.chdir("/")  # never keep the state dir busy
    become_subreaper()
    asyncio.run(Supervisor(record).serve())
    supervisor_socket(run_id).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Calls to the supervisor, from the other hostctl processes of the run
# --------------------------------------------------------------------------------------------------

def supervisor_call(run_id: str, request: dict, timeout: float = 10.0) -> dict:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(supervisor_socket(run_id)))
            s.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise HostctlError(f"supervisor of run {run_id} is not running (is the run down?)") from None
    except OSError as e:
        raise HostctlError(f"supervisor of run {run_id}: {e}") from None
    reply = json.loads(data or b"{}")
    if "error" in reply:
        raise HostctlError(f"supervisor of run {run_id}: {reply['error']}")
    return reply


def spawn(run_id: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process of the run, detached from the caller, as a child of the run's supervisor."""
    return supervisor_call(run_id, {"op": "spawn", "argv": argv, "env": env or {}, "log": str(log)})["pid"]


def spawned_exit_code(run_id: str, pid: int) -> int | None:
    with contextlib.suppress(HostctlError):
        return supervisor_call(run_id, {"op": "exit_code", "pid": pid})["exit_code"]
    return None


def fail_if_exited(run_id: str, pid: int, what: str, *logs: Path) -> None:
    """Cut short a wait for a spawned process that has died, saying why: its status and last log line."""
    if not is_running(pid):
        code = spawned_exit_code(run_id, pid)
        why = last_line_of(*logs)
        raise HostctlError(f"{what} exited (status {code}): {why}")


def start_supervisor(record: RunRecord) -> None:
    log = Path(record.state_dir) / "supervisor.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, str(HOSTCTL), "_supervise", "--run-id", record.run_id],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/")

    def ready() -> bool:
        if proc.poll() is not None:
            raise HostctlError(f"supervisor exited with status {proc.returncode}: {last_line_of(log)}")
        with contextlib.suppress(HostctlError):
            return bool(supervisor_call(record.run_id, {"op": "ping"}, timeout=1))
        return False

    wait_until(ready, READY_TIMEOUT, "the run's supervisor")
    record.supervisor_pid = proc.pid
    record.supervisor_start = process_start_time(proc.pid)
    write_record(record)


def stop_supervisor(record: RunRecord) -> None:
    if record.supervisor_pid and is_running(record.supervisor_pid, record.supervisor_start):
        stop_processes([record.supervisor_pid])
    elif record.supervisor_pid:
        reap_if_child(record.supervisor_pid)
