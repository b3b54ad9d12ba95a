#!/usr/bin/env python3
"""Real target hosts for pssession-operator's end-to-end tests.

A host is a Linux network namespace joined to the root namespace by a veth pair. In it run a real
OpenSSH sshd (Debian's /usr/sbin/sshd) and the project's PSRP peer (e2e/peer), which sshd reaches
through its `powershell` subsystem. Faults are real too: stop sshd, set the link down, black-hole the
host with nftables, or put a delaying TCP relay in front of it.

Usable as a CLI (`hostctl.py --help`; README.md beside this file) and as a module
(`up`, `down`, `gc` and the fault functions). Everything a test needs is written to DIR/hosts.json.
Python 3.11, stdlib only, run as root.

Processes of a run are spawned by a per-run supervisor process, which is a child subreaper: every
process of the run, and every orphan it leaves (sshd's per-connection children), is reaped by it
rather than by PID 1, which on these machines does not reap. The supervisor also tears the run down
when the process that owns the run (by default the caller of `up`) dies without calling `down`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import ipaddress
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

# --------------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------------

HOSTCTL = Path(__file__).resolve()
E2E_DIR = HOSTCTL.parent.parent
PEER_DIR = E2E_DIR / "peer"
PEER_MAIN = PEER_DIR / "psrp_peer" / "__main__.py"
SHIM = PEER_DIR / "pwsh-shim"
PYTHON_ENV_SCRIPT = E2E_DIR / "python-env.sh"
SSHD = "/usr/sbin/sshd"

# Run bookkeeping shared by all runs on the machine. /run is a tmpfs, like the netns mounts in
# /run/netns, so a reboot clears both together.
REGISTRY_DIR = Path("/run/psso-hosts")
GLOBAL_LOCK_FILE = REGISTRY_DIR / "lock"

DEFAULT_SUBNET = "10.213.0.0/16"
DEFAULT_MAX_SESSIONS = 1024
SSH_PORT = 22
BLACKHOLE_TABLE = "psso_blackhole"

# Names carry the run id so parallel runs and leftovers of dead runs never clash, and `gc` can
# tell which run a namespace, veth or user belongs to. Interface names are limited to 15 bytes.
NETNS_RE = re.compile(r"^psso-([0-9a-f]{6})-h(\d+)$")
VETH_RE = re.compile(r"^pso([0-9a-f]{6})[rn](\d+)$")
USER_RE = re.compile(r"^psso-([0-9a-f]{6})-(pw|key)$")
REGISTRY_RE = re.compile(r"^([0-9a-f]{6})\.json$")

# The state dir ends up unquoted in sshd_config and in the subsystem's shell command line.
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]+$")
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
LOCK_TIMEOUT = 120.0
PYTHON_ENV_TIMEOUT = 900.0  # the first call creates the venv and installs the pins
OWNER_POLL_INTERVAL = 1.0

CHILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}


class HostctlError(Exception):
    """A failure the CLI reports as one line on stderr (exit status 1)."""


# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------

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


def _reap_if_child(pid: int) -> None:
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
                _reap_if_child(pid)
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


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------

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


# Serialises address allocation, registry changes, useradd/userdel and teardown across processes.
GLOBAL_LOCK = FileLock(GLOBAL_LOCK_FILE)


# --------------------------------------------------------------------------------------------------
# Run registry: /run/psso-hosts/<run>.json, so gc can tell live runs from dead ones
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunRecord:
    run_id: str
    state_dir: str
    owner_pid: int | None  # None: no owner; the run lives until `down` or its state dir vanishes
    owner_start: int | None
    blocks: list[str]  # the /30 networks the run's hosts use
    supervisor_pid: int | None = None
    supervisor_start: int | None = None


def registry_path(run_id: str) -> Path:
    return REGISTRY_DIR / f"{run_id}.json"


def supervisor_socket(run_id: str) -> Path:
    # Kept out of the state dir: short path (sun_path limit) and root-only directory.
    return REGISTRY_DIR / f"{run_id}.sock"


def write_record(record: RunRecord) -> None:
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(registry_path(record.run_id), json.dumps(dataclasses.asdict(record)))


def read_record(run_id: str) -> RunRecord | None:
    try:
        return RunRecord(**json.loads(registry_path(run_id).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def all_records() -> list[RunRecord]:
    if not REGISTRY_DIR.is_dir():
        return []
    names = (REGISTRY_RE.match(p.name) for p in REGISTRY_DIR.iterdir())
    records = (read_record(m.group(1)) for m in names if m)
    return [r for r in records if r is not None]


def owner_alive(record: RunRecord) -> bool:
    if record.owner_pid is None:
        return True
    return is_running(record.owner_pid, record.owner_start)


def run_is_dead(run_id: str) -> bool:
    """A run is dead when nothing can still use it: no record, its state dir gone, or its owner gone."""
    record = read_record(run_id)
    if record is None:
        return True
    if not Path(record.state_dir).is_dir():
        return True
    return not owner_alive(record)


# --------------------------------------------------------------------------------------------------
# Addresses: one /30 per host from a dedicated range, avoiding routes that are not ours
# --------------------------------------------------------------------------------------------------

ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "unreachable", "blackhole", "prohibit",
               "throw", "nat", "anycast"}


def foreign_routes() -> list[ipaddress.IPv4Network]:
    """IPv4 route destinations (all tables, default excluded) on devices this harness did not make."""
    networks = []
    for line in run(["ip", "-4", "-o", "route", "show", "table", "all"]).stdout.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in ROUTE_TYPES:
            tokens = tokens[1:]
        if not tokens or tokens[0] == "default":
            continue
        dev = tokens[tokens.index("dev") + 1] if "dev" in tokens[:-1] else ""
        if VETH_RE.match(dev):
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(tokens[0], strict=False))
    return networks


def used_blocks(subnet: ipaddress.IPv4Network) -> set[ipaddress.IPv4Network]:
    """Blocks taken by other runs: recorded in the registry, or configured on an interface."""
    used = {ipaddress.ip_network(b) for r in all_records() for b in r.blocks}
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        tokens = line.split()
        if "inet" in tokens:
            iface = ipaddress.ip_interface(tokens[tokens.index("inet") + 1])
            if iface.ip in subnet:
                used.add(ipaddress.ip_network(f"{iface.ip}/30", strict=False))
    return used


def allocate_blocks(subnet_text: str, count: int) -> list[ipaddress.IPv4Network]:
    """Pick `count` free /30 blocks. Caller holds GLOBAL_LOCK and records them before releasing it."""
    try:
        subnet = ipaddress.IPv4Network(subnet_text)
    except ValueError as e:
        raise HostctlError(f"--subnet {subnet_text!r}: {e}") from None
    if subnet.prefixlen > 30:
        raise HostctlError(f"--subnet {subnet_text}: needs room for /30 blocks")
    taken = used_blocks(subnet)
    foreign = [n for n in foreign_routes() if n.overlaps(subnet)]
    free = []
    for block in subnet.subnets(new_prefix=30):
        if block not in taken and not any(block.overlaps(n) for n in foreign):
            free.append(block)
            if len(free) == count:
                return free
    raise HostctlError(f"only {len(free)} free /30 blocks in {subnet} (routes or other runs use the rest); "
                       f"pass another --subnet")


# --------------------------------------------------------------------------------------------------
# The supervisor: a per-run subreaper that spawns the run's processes and reaps all of them
# --------------------------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


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
        _reap_if_child(record.supervisor_pid)


# --------------------------------------------------------------------------------------------------
# Network: a namespace per host, joined to the root namespace by a veth pair
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HostNet:
    name: str  # h<i>
    netns: str
    veth_root: str
    veth_host: str
    gateway: str  # root side of the /30
    address: str  # namespace side of the /30: where sshd listens

    @classmethod
    def for_block(cls, run_id: str, index: int, block: ipaddress.IPv4Network) -> "HostNet":
        return cls(name=f"h{index}", netns=f"psso-{run_id}-h{index}",
                   veth_root=f"pso{run_id}r{index}", veth_host=f"pso{run_id}n{index}",
                   gateway=str(block.network_address + 1), address=str(block.network_address + 2))

    @classmethod
    def from_host(cls, host: dict) -> "HostNet":
        return cls(name=host["name"], netns=host["netns"], veth_root=host["veth_root"],
                   veth_host=host["veth_host"], gateway=host["gateway"], address=host["address"])


def create_network(net: HostNet) -> None:
    run(["ip", "netns", "add", net.netns])
    run(["ip", "link", "add", net.veth_root, "type", "veth", "peer", "name", net.veth_host, "netns", net.netns])
    run(["ip", "addr", "add", f"{net.gateway}/30", "dev", net.veth_root])
    run(["ip", "link", "set", net.veth_root, "up"])
    run(["ip", "-n", net.netns, "link", "set", "lo", "up"])
    run(["ip", "-n", net.netns, "addr", "add", f"{net.address}/30", "dev", net.veth_host])
    run(["ip", "-n", net.netns, "link", "set", net.veth_host, "up"])
    pin_neighbours(net)


def link_mac(dev: str, netns: str | None = None) -> str:
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show", "dev", dev]
    return json.loads(run(argv).stdout)[0]["address"]


def pin_neighbours(net: HostNet) -> None:
    """Permanent ARP entries on both sides.

    Without them a link that is down makes ARP fail after ~3 s and connect() return EHOSTUNREACH;
    with them packets are dropped silently and connections hang, as on a cut somewhere on the path,
    which is the fault the tests mean by "link down".
    """
    run(["ip", "neigh", "replace", net.address, "lladdr", link_mac(net.veth_host, net.netns),
         "dev", net.veth_root, "nud", "permanent"])
    run(["ip", "-n", net.netns, "neigh", "replace", net.gateway, "lladdr", link_mac(net.veth_root),
         "dev", net.veth_host, "nud", "permanent"])


def netns_list() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def root_links() -> list[str]:
    return [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)]


def tcp_listening(pid: int, address: str, port: int) -> bool:
    """Whether the namespace of `pid` has a TCP listener on address:port.

    Read from /proc rather than by connecting, so it works while the host is black-holed.
    """
    want = f"{socket.htonl(int(ipaddress.IPv4Address(address))):08X}:{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in lines))


def unix_listening(pid: int, path: Path) -> bool:
    """Whether a listening Unix socket bound to `path` exists in the namespace of `pid`."""
    so_acceptcon = 0x10000
    try:
        lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    for fields in (line.split() for line in lines):
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & so_acceptcon:
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Users and keys
# --------------------------------------------------------------------------------------------------

def user_names(run_id: str) -> tuple[str, str]:
    """(password user, key user). Per run: a password is machine-wide, so parallel runs with
    per-run passwords, or a test that expires a credential, would break each other on shared users."""
    return f"psso-{run_id}-pw", f"psso-{run_id}-key"


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_user(name: str) -> None:
    """Create the user once; idempotent. Login shell /bin/sh, which prints nothing for `sh -c`."""
    with GLOBAL_LOCK:  # useradd/userdel of parallel runs would fight over /etc/shadow's lock
        if not user_exists(name):
            # '*' = no password, but not locked: with UsePAM no, sshd refuses even key login to an
            # account whose password field is locked ('!'), which is useradd's default.
            run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name])


def set_password(name: str, password: str) -> None:
    with GLOBAL_LOCK:
        run(["chpasswd"], input=f"{name}:{password}\n")


def remove_user(name: str) -> None:
    with GLOBAL_LOCK:
        if user_exists(name):
            run(["userdel", "--remove", "--force", name])


def run_users() -> dict[str, list[str]]:
    """Test users on the machine, by run id."""
    users: dict[str, list[str]] = {}
    with open("/etc/passwd") as f:
        for line in f:
            match = USER_RE.match(line.split(":", 1)[0])
            if match:
                users.setdefault(match.group(1), []).append(match.group(0))
    return users


def keygen(path: Path, comment: str, passphrase: str = "") -> str:
    """Make an ed25519 keypair at `path`; return the public key line."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


def make_users(run_id: str, state_dir: Path) -> dict:
    """Users, their credentials and authorized keys; returns hosts.json's `users`."""
    pw_user, key_user = user_names(run_id)
    for name in (pw_user, key_user):
        ensure_user(name)
    password = secrets.token_urlsafe(18)
    set_password(pw_user, password)

    key_dir = state_dir / "users"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    key = key_dir / "id_ed25519"
    passphrase_key = key_dir / "id_ed25519_passphrase"
    passphrase = secrets.token_urlsafe(12)
    public = keygen(key, f"{key_user}@psso-{run_id}")
    passphrase_public = keygen(passphrase_key, f"{key_user}+passphrase@psso-{run_id}", passphrase)

    # sshd reads authorized keys as the user, so this directory is world-readable (keys are public).
    auth_dir = state_dir / "authorized_keys"
    auth_dir.mkdir(mode=0o755, exist_ok=True)
    write_atomically(auth_dir / key_user, f"{public}\n{passphrase_public}\n", mode=0o644)
    return {
        "password": {"name": pw_user, "password": password},
        "key": {"name": key_user, "private_key": str(key), "public_key": public},
        "passphrase_key": {"name": key_user, "private_key": str(passphrase_key),
                           "public_key": passphrase_public, "passphrase": passphrase},
    }


# --------------------------------------------------------------------------------------------------
# State: DIR/hosts.json, the contract with the tests
# --------------------------------------------------------------------------------------------------

def hosts_json(state_dir: Path) -> Path:
    return state_dir / "hosts.json"


def load_state(state_dir: Path) -> dict:
    try:
        return json.loads(hosts_json(state_dir).read_text())
    except FileNotFoundError:
        raise HostctlError(f"{hosts_json(state_dir)} not found: run `hostctl.py up` first") from None
    except (OSError, ValueError) as e:
        raise HostctlError(f"{hosts_json(state_dir)}: {e}") from None


def save_state(state: dict) -> None:
    # Root only: it holds the test password and passphrase.
    write_atomically(hosts_json(Path(state["state_dir"])), json.dumps(state, indent=2) + "\n", mode=0o600)


@contextlib.contextmanager
def live_state(state_dir: str | Path) -> Iterator[dict]:
    """Load hosts.json of a running run under the state dir's lock; save it if the body succeeds."""
    require_root()
    state_dir = Path(state_dir).resolve()
    with FileLock(state_dir / ".hostctl.lock"):
        state = load_state(state_dir)
        if read_record(state["run_id"]) is None:
            raise HostctlError(f"run {state['run_id']} of {state_dir} is down")
        yield state
        save_state(state)


def find_host(state: dict, name: str) -> dict:
    for host in state["hosts"]:
        if host["name"] == name:
            return host
    names = ", ".join(h["name"] for h in state["hosts"])
    raise HostctlError(f"no host {name!r} in {state['state_dir']} (hosts: {names})")


def prepare_state_dir(state_dir: str | Path, count: int) -> Path:
    """Create the state dir and check the ssh users can reach into it.

    sshd reads authorized_keys as the user and the subsystem shim, running as the user, connects
    to DIR/<host>/peer.sock: every ancestor must be traversable by others.
    """
    path = Path(state_dir).resolve()
    if not SAFE_PATH_RE.match(str(path)):
        raise HostctlError(f"state dir {path}: only [A-Za-z0-9._/+-] allowed "
                           f"(it appears unquoted in sshd_config and the subsystem command)")
    longest_socket = path / f"h{count - 1}" / "peer.sock"
    if len(str(longest_socket)) > UNIX_PATH_MAX:
        raise HostctlError(f"state dir {path} is too long: {longest_socket} exceeds the "
                           f"{UNIX_PATH_MAX}-byte Unix socket path limit")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)  # traversable, not listable
    for ancestor in path.parents:
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            raise HostctlError(f"state dir {path}: the ssh test users cannot traverse {ancestor} "
                               f"(mode {stat.S_IMODE(ancestor.stat().st_mode):04o}); "
                               f"use a directory under a world-traversable one such as /tmp")
    return path


# --------------------------------------------------------------------------------------------------
# sshd
# --------------------------------------------------------------------------------------------------

def sshd_config_text(host: dict, state: dict) -> str:
    users = state["users"]
    max_sessions = state["max_sessions"]
    state_dir = state["state_dir"]
    return "\n".join([
        f"# written by {HOSTCTL.name} for run {state['run_id']}, host {host['name']}",
        f"ListenAddress {host['address']}:{host['port']}",
        "AddressFamily inet",
        f"HostKey {host['dir']}/ssh_host_ed25519_key",
        f"PidFile {host['sshd']['pid_file']}",
        f"AuthorizedKeysFile {state_dir}/authorized_keys/%u",
        f"AllowUsers {users['password']['name']} {users['key']['name']}",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        # Scale runs open hundreds of connections (MaxStartups: unauthenticated ones at a time)
        # and channels (MaxSessions: per connection) against one host.
        f"MaxStartups {max_sessions}",
        f"MaxSessions {max_sessions}",
        "LogLevel VERBOSE",
        f"Subsystem powershell {SHIM} {host['peer_socket']}",
        "",
    ])


def write_host_files(host: dict, state: dict) -> None:
    host_dir = Path(host["dir"])
    host_dir.mkdir(mode=0o711, exist_ok=True)
    host_dir.chmod(0o711)
    public = keygen(host_dir / "ssh_host_ed25519_key", f"psso-{state['run_id']}-{host['name']}")
    key_type, key_data = public.split()[:2]
    host["host_keys"] = [f"{host['address']} {key_type} {key_data}"]
    write_atomically(Path(host["known_hosts"]), "\n".join(host["host_keys"]) + "\n", mode=0o644)
    write_atomically(Path(host["sshd"]["config"]), sshd_config_text(host, state), mode=0o644)
    ensure_privsep_dir()
    run([SSHD, "-t", "-f", host["sshd"]["config"]])  # a bad config fails here, clearly, not at start


def ensure_privsep_dir() -> None:
    """A root sshd refuses to start (or even check its config) without /run/sshd."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def spawn_sshd(state: dict, host: dict) -> None:
    ensure_privsep_dir()
    Path(host["sshd"]["pid_file"]).unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", host["netns"], SSHD, "-D", "-f", host["sshd"]["config"], "-E", host["sshd"]["log"]]
    host["sshd"]["pid"] = spawn(state["run_id"], argv, Path(host["dir"]) / "sshd.out")
    host["sshd"]["running"] = True


def wait_sshd_ready(state: dict, host: dict) -> None:
    pid = host["sshd"]["pid"]

    def listening() -> bool:
        if tcp_listening(pid, host["address"], host["port"]):
            return True
        if not is_running(pid):
            code = spawned_exit_code(state["run_id"], pid)
            why = last_line_of(Path(host["sshd"]["log"]), Path(host["dir"]) / "sshd.out")
            raise HostctlError(f"sshd of {host['name']} exited (status {code}): {why}")
        return False

    wait_until(listening, READY_TIMEOUT, f"sshd of {host['name']} to listen on {host['address']}:{host['port']}")


def stop_sshd_listener(host: dict) -> None:
    """Stop the listening sshd only. Established sessions live on, as with `systemctl stop ssh`
    (Debian's unit uses KillMode=process): new connections are refused, old ones keep working."""
    stop_processes([pid for pid in (host["sshd"].get("pid"),) if pid])
    Path(host["sshd"]["pid_file"]).unlink(missing_ok=True)
    host["sshd"]["pid"] = None
    host["sshd"]["running"] = False


# --------------------------------------------------------------------------------------------------
# The PSRP peer (e2e/peer, written separately): one long-lived process per host
# --------------------------------------------------------------------------------------------------

def resolve_peer_python() -> str:
    """The venv python that has psrpcore, from e2e/python-env.sh (creates the venv on first use)."""
    override = os.environ.get("PSSO_PEER_PYTHON")
    if override:
        return override
    out = run(["bash", str(PYTHON_ENV_SCRIPT)], timeout=PYTHON_ENV_TIMEOUT).stdout.strip().splitlines()
    if not out:
        raise HostctlError(f"{PYTHON_ENV_SCRIPT} printed no venv path")
    return f"{out[-1]}/bin/python"


def check_peer_installed() -> None:
    if not PEER_MAIN.is_file():
        raise HostctlError(f"PSRP peer not found ({PEER_MAIN}); pass --no-peer to start hosts without it")
    if not os.access(SHIM, os.X_OK):
        raise HostctlError(f"subsystem shim {SHIM} missing or not executable; pass --no-peer")


def spawn_peer(state: dict, host: dict) -> None:
    peer = host["peer"]
    Path(peer["socket"]).unlink(missing_ok=True)
    Path(peer["pid_file"]).unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", host["netns"], state["peer_python"], "-m", "psrp_peer",
            "--socket", peer["socket"], "--log", peer["log"], "--pid-file", peer["pid_file"]]
    peer["pid"] = spawn(state["run_id"], argv, Path(host["dir"]) / "peer.out", env={"PYTHONPATH": str(PEER_DIR)})


def wait_peer_ready(state: dict, host: dict) -> None:
    peer = host["peer"]
    sock = Path(peer["socket"])

    def listening() -> bool:
        # The pid file wins if the peer forked away from the process we spawned.
        pid = read_pid_file(Path(peer["pid_file"]))
        pid = pid if is_running(pid) else peer["pid"]
        if unix_listening(pid, sock):
            peer["pid"] = pid
            return True
        if not is_running(pid):
            code = spawned_exit_code(state["run_id"], pid)
            why = last_line_of(Path(host["dir"]) / "peer.out", Path(peer["log"]))
            raise HostctlError(f"PSRP peer of {host['name']} exited (status {code}): {why}")
        return False

    wait_until(listening, READY_TIMEOUT, f"the PSRP peer of {host['name']} to listen on {sock}")
    # The shim connects as the ssh user, whatever umask the peer bound the socket with.
    sock.chmod(0o666)


def stop_peer(host: dict) -> None:
    peer = host["peer"]
    stop_processes([pid for pid in (peer.get("pid"), read_pid_file(Path(peer["pid_file"]))) if pid])
    Path(peer["socket"]).unlink(missing_ok=True)
    Path(peer["pid_file"]).unlink(missing_ok=True)
    peer["pid"] = None


# --------------------------------------------------------------------------------------------------
# up / down / gc
# --------------------------------------------------------------------------------------------------

def new_run_id() -> str:
    taken = {m.group(1) for m in map(NETNS_RE.match, netns_list()) if m} | {r.run_id for r in all_records()}
    while True:
        run_id = secrets.token_hex(3)
        if run_id not in taken:
            return run_id


def host_entry(state_dir: Path, net: HostNet, with_peer: bool) -> dict:
    """A host's hosts.json entry before anything runs."""
    host_dir = state_dir / net.name
    return {
        **dataclasses.asdict(net),
        "port": SSH_PORT,
        "dir": str(host_dir),
        "known_hosts": str(host_dir / "known_hosts"),
        "host_keys": [],
        "peer_socket": str(host_dir / "peer.sock"),
        "sshd": {"pid": None, "running": False, "config": str(host_dir / "sshd_config"),
                 "log": str(host_dir / "sshd.log"), "pid_file": str(host_dir / "sshd.pid")},
        "peer": {"pid": None, "socket": str(host_dir / "peer.sock"), "log": str(host_dir / "peer.log"),
                 "pid_file": str(host_dir / "peer.pid")} if with_peer else None,
        "link_up": True,
        "blackholed": False,
        "relay": None,
    }


def up(state_dir: str | Path, count: int, *, max_sessions: int = DEFAULT_MAX_SESSIONS, peer: bool = True,
       subnet: str = DEFAULT_SUBNET, owner_pid: int | None = None) -> dict:
    """Start `count` hosts; write and return DIR/hosts.json.

    owner_pid: the run is torn down when this process dies (default: the calling process;
    0: never, only by `down` or when the state dir is removed).
    """
    require_root()
    if count < 1:
        raise HostctlError("--count must be at least 1")
    if not 1 <= max_sessions <= 100000:
        raise HostctlError("--max-sessions must be in 1..100000")
    state_dir = prepare_state_dir(state_dir, count)
    previous = run_id_of(state_dir)
    if previous and not run_is_dead(previous):
        raise HostctlError(f"{state_dir} already has running hosts (run {previous}); `down` first")
    if peer:
        check_peer_installed()
    peer_python = resolve_peer_python() if peer else None
    owner = os.getpid() if owner_pid is None else owner_pid

    with GLOBAL_LOCK:
        gc()
        run_id = new_run_id()
        blocks = allocate_blocks(subnet, count)
        record = RunRecord(run_id=run_id, state_dir=str(state_dir), owner_pid=owner or None,
                           owner_start=process_start_time(owner) if owner else None,
                           blocks=[str(b) for b in blocks])
        write_record(record)  # from here on, gc and `down` can find everything this run makes
    try:
        return _bring_up(record, blocks, state_dir, max_sessions, peer_python)
    except BaseException:
        with contextlib.suppress(Exception):
            teardown_run(run_id, state_dir)
        raise


def _bring_up(record: RunRecord, blocks: list[ipaddress.IPv4Network], state_dir: Path,
              max_sessions: int, peer_python: str | None) -> dict:
    start_supervisor(record)
    nets = [HostNet.for_block(record.run_id, i, block) for i, block in enumerate(blocks)]
    state = {
        "version": 1,
        "run_id": record.run_id,
        "state_dir": str(state_dir),
        "owner_pid": record.owner_pid,
        "supervisor_pid": record.supervisor_pid,
        "max_sessions": max_sessions,
        "peer_python": peer_python,
        "known_hosts": str(state_dir / "known_hosts"),
        "users": make_users(record.run_id, state_dir),
        "hosts": [host_entry(state_dir, net, peer_python is not None) for net in nets],
    }
    for net, host in zip(nets, state["hosts"]):
        create_network(net)
        write_host_files(host, state)
    all_keys = [line for host in state["hosts"] for line in host["host_keys"]]
    write_atomically(Path(state["known_hosts"]), "\n".join(all_keys) + "\n", mode=0o644)

    # Start everything first, then wait: the hosts come up in parallel.
    for host in state["hosts"]:
        spawn_sshd(state, host)
        if host["peer"]:
            spawn_peer(state, host)
    for host in state["hosts"]:
        wait_sshd_ready(state, host)
        if host["peer"]:
            wait_peer_ready(state, host)
    save_state(state)
    return state


def run_id_of(state_dir: Path) -> str | None:
    """The run that owns a state dir: from hosts.json, or from the registry if `up` died early."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(hosts_json(state_dir).read_text())["run_id"]
    for record in all_records():
        if Path(record.state_dir) == state_dir:
            return record.run_id
    return None


def down(state_dir: str | Path) -> dict:
    """Stop every process of the run and remove its namespaces, veths and users. Idempotent."""
    require_root()
    state_dir = Path(state_dir).resolve()
    run_id = run_id_of(state_dir)
    if run_id is None:
        return {"state_dir": str(state_dir), "run_id": None, "removed": False}
    removed = teardown_run(run_id, state_dir)
    return {"state_dir": str(state_dir), "run_id": run_id, "removed": removed}


def gc() -> dict:
    """Tear down every run that is dead (see run_is_dead) and whatever it left behind."""
    require_root()
    with GLOBAL_LOCK:
        dead = sorted(r for r in known_run_ids() if run_is_dead(r))
        for run_id in dead:
            teardown_run(run_id)
    return {"removed_runs": dead}


def known_run_ids() -> set[str]:
    ids = {r.run_id for r in all_records()}
    ids |= {m.group(1) for m in map(NETNS_RE.match, netns_list()) if m}
    ids |= {m.group(1) for m in map(VETH_RE.match, root_links()) if m}
    ids |= set(run_users())
    return ids


def teardown_run(run_id: str, state_dir: Path | None = None, *, keep_supervisor: bool = False) -> bool:
    """Remove everything of one run, found by name as well as by record, so a half-made run goes too.

    Returns whether there was anything to remove.
    """
    with GLOBAL_LOCK:
        record = read_record(run_id)
        if state_dir is None and record is not None:
            state_dir = Path(record.state_dir)
        if state_dir is not None:
            stop_relays(run_id, state_dir)
        namespaces = [n for n in netns_list() if (m := NETNS_RE.match(n)) and m.group(1) == run_id]
        for netns in namespaces:
            kill_namespace(netns)
        links = [l for l in root_links() if (m := VETH_RE.match(l)) and m.group(1) == run_id]
        for link in links:
            run(["ip", "link", "del", link], check=False)  # veths whose namespace was never made
        users = run_users().get(run_id, [])
        for user in users:
            remove_user(user)
        if record is not None and not keep_supervisor:
            stop_supervisor(record)
        registry_path(run_id).unlink(missing_ok=True)
        if not keep_supervisor:
            supervisor_socket(run_id).unlink(missing_ok=True)
        return bool(record or namespaces or links or users)


def kill_namespace(netns: str) -> None:
    """End every process in the namespace (sshd, its sessions, shims, the peer), then delete it.

    Deleting the namespace destroys its veth end, and with it the root end and the nft tables in it.
    """
    for _ in range(5):  # bounded: a dying sshd could still have forked a session child
        pids = netns_pids(netns)
        if not pids:
            break
        stop_processes(pids)
    run(["ip", "netns", "del", netns], check=False)


def stop_relays(run_id: str, state_dir: Path) -> None:
    with contextlib.suppress(HostctlError, KeyError):
        state = load_state(state_dir)
        if state["run_id"] != run_id:
            return
        relays = [h["relay"] for h in state["hosts"] if h.get("relay")]
        stop_processes([r["pid"] for r in relays if is_running(r["pid"], r.get("start_time"))])


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------

def sshd_stop(state_dir: str | Path, name: str) -> dict:
    """Stop the host's listening sshd: new connections are refused."""
    with live_state(state_dir) as state:
        host = find_host(state, name)
        stop_sshd_listener(host)
        return host


def sshd_start(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        if host["sshd"]["running"] and is_running(host["sshd"]["pid"]):
            return host
        spawn_sshd(state, host)
        wait_sshd_ready(state, host)
        return host


def sshd_restart(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        stop_sshd_listener(host)
        spawn_sshd(state, host)
        wait_sshd_ready(state, host)
        return host


def link_down(state_dir: str | Path, name: str) -> dict:
    """Set the host's veth down, inside its namespace: packets to it are dropped, connections hang."""
    with live_state(state_dir) as state:
        host = find_host(state, name)
        run(["ip", "-n", host["netns"], "link", "set", host["veth_host"], "down"])
        host["link_up"] = False
        return host


def link_up(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        run(["ip", "-n", host["netns"], "link", "set", host["veth_host"], "up"])
        pin_neighbours(HostNet.from_host(host))  # setting a link down flushes its neighbour table
        host["link_up"] = True
        return host


def blackhole_ruleset(veth: str) -> str:
    # Drop, not reject: a real network cut sends nothing back, so TCP hangs until its timers fire.
    # Written as add/flush/add so that applying it twice is harmless.
    return "\n".join([
        f"add table inet {BLACKHOLE_TABLE}",
        f"flush table inet {BLACKHOLE_TABLE}",
        f"add chain inet {BLACKHOLE_TABLE} input {{ type filter hook input priority -10; policy accept; }}",
        f"add chain inet {BLACKHOLE_TABLE} output {{ type filter hook output priority -10; policy accept; }}",
        f'add rule inet {BLACKHOLE_TABLE} input iifname "{veth}" drop',
        f'add rule inet {BLACKHOLE_TABLE} output oifname "{veth}" drop',
        "",
    ])


def nft_tables(netns: str | None = None) -> list[str]:
    """`family name` of every nftables table, in a namespace or the root one."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = run(prefix + ["nft", "list", "tables"]).stdout
    return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")]


def blackhole(state_dir: str | Path, name: str) -> dict:
    """Drop all traffic on the host's veth with an nftables table inside its namespace."""
    with live_state(state_dir) as state:
        host = find_host(state, name)
        run(["ip", "netns", "exec", host["netns"], "nft", "-f", "-"], input=blackhole_ruleset(host["veth_host"]))
        host["blackholed"] = True
        return host


def unblackhole(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        if f"inet {BLACKHOLE_TABLE}" in nft_tables(host["netns"]):
            run(["ip", "netns", "exec", host["netns"], "nft", "delete", "table", "inet", BLACKHOLE_TABLE])
        host["blackholed"] = False
        return host


def peer_restart(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        if not host["peer"]:
            raise HostctlError(f"host {name} runs without a peer (up --no-peer)")
        stop_peer(host)
        spawn_peer(state, host)
        wait_peer_ready(state, host)
        return host


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        address = ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        raise HostctlError(f"--listen {text!r}: want ADDRESS:PORT, e.g. 127.0.0.1:0") from None
    if not sep or not address.is_loopback or not 0 <= port_number <= 65535:
        raise HostctlError(f"--listen {text!r}: must be a loopback ADDRESS:PORT")
    return str(address), port_number


def relay_start(state_dir: str | Path, name: str, delay_ms: int, listen: str = "127.0.0.1:0") -> dict:
    """Put a TCP relay on loopback in front of the host's sshd, delaying each direction by delay_ms.

    Replaces a relay already running for the host. Returns the host; its `relay` has the port.
    """
    listen_address, listen_port = parse_listen(listen)
    if not 0 <= delay_ms <= 600_000:
        raise HostctlError("--delay-ms must be in 0..600000")
    with live_state(state_dir) as state:
        host = find_host(state, name)
        _stop_relay(host)
        host_dir = Path(host["dir"])
        port_file = host_dir / "relay.port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, str(HOSTCTL), "_relay", "--listen", f"{listen_address}:{listen_port}",
                "--target", f"{host['address']}:{host['port']}", "--delay-ms", str(delay_ms),
                "--port-file", str(port_file), "--watch", f"/run/netns/{host['netns']}"]
        pid = spawn(state["run_id"], argv, host_dir / "relay.log")
        port = _wait_relay_port(state, host, pid, port_file)
        key_type, key_data = host["host_keys"][0].split()[1:3]
        host_spec = f"[{listen_address}]:{port}" if port != 22 else listen_address
        known_hosts_line = f"{host_spec} {key_type} {key_data}"
        write_atomically(host_dir / "relay_known_hosts", known_hosts_line + "\n", mode=0o644)
        host["relay"] = {"pid": pid, "start_time": process_start_time(pid), "address": listen_address,
                         "port": port, "delay_ms": delay_ms, "log": str(host_dir / "relay.log"),
                         "known_hosts": str(host_dir / "relay_known_hosts"),
                         "known_hosts_line": known_hosts_line}
        return host


def _wait_relay_port(state: dict, host: dict, pid: int, port_file: Path) -> int:
    def port() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(port_file.read_text())
        if not is_running(pid):
            code = spawned_exit_code(state["run_id"], pid)
            why = last_line_of(Path(host["dir"]) / "relay.log")
            raise HostctlError(f"relay of {host['name']} exited (status {code}): {why}")
        return None

    return wait_until(port, READY_TIMEOUT, f"the relay of {host['name']} to listen")


def _stop_relay(host: dict) -> None:
    relay = host.get("relay")
    if relay and is_running(relay["pid"], relay.get("start_time")):
        stop_processes([relay["pid"]])
    host["relay"] = None


def relay_stop(state_dir: str | Path, name: str) -> dict:
    with live_state(state_dir) as state:
        host = find_host(state, name)
        _stop_relay(host)
        return host


# --------------------------------------------------------------------------------------------------
# The relay process (hidden `_relay` subcommand)
# --------------------------------------------------------------------------------------------------

RELAY_CHUNK = 65536
RELAY_QUEUE_CHUNKS = 64  # per direction; bounds memory and gives backpressure to the sender


async def relay_direction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, delivering each chunk `delay` seconds after it was read.

    Reading and delivering are separate tasks, so the delay is latency, not a throughput cap.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(RELAY_QUEUE_CHUNKS)

    async def receive() -> None:
        while True:
            chunk = await reader.read(RELAY_CHUNK)
            await queue.put((loop.time() + delay, chunk))
            if not chunk:
                return

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:  # EOF travels with the same delay, as a FIN would
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        group.create_task(deliver())


async def relay_connection(client_reader, client_writer, target: tuple[str, int], delay: float) -> None:
    try:
        server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*target), 60)
    except (OSError, asyncio.TimeoutError) as e:
        print(f"relay: connect to {target[0]}:{target[1]} failed: {e}", flush=True)
        client_writer.close()
        return
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(relay_direction(client_reader, server_writer, delay))
            group.create_task(relay_direction(server_reader, client_writer, delay))
    except* (OSError, asyncio.IncompleteReadError):
        pass  # a reset on either side ends the connection on both
    finally:
        client_writer.close()
        server_writer.close()


async def relay_serve(listen: tuple[str, int], target: tuple[str, int], delay: float, port_file: Path,
                      watch: Path | None) -> None:
    connections: set[asyncio.Task] = set()

    async def accept(reader, writer) -> None:
        task = asyncio.current_task()
        connections.add(task)
        try:
            await relay_connection(reader, writer, target, delay)
        finally:
            connections.discard(task)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(accept, *listen)
    write_atomically(port_file, str(server.sockets[0].getsockname()[1]), mode=0o644)
    # Exit with the host: if its namespace is gone, the run was torn down without us.
    while not stop.is_set() and (watch is None or watch.exists()):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    server.close()
    for task in connections:
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)


def relay_main(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    asyncio.run(relay_serve(parse_listen(args.listen), (host, int(port)), args.delay_ms / 1000.0,
                            Path(args.port_file), Path(args.watch) if args.watch else None))


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

# name: (function, help)
FAULTS: dict[str, tuple[Callable[[str, str], dict], str]] = {
    "sshd-stop": (sshd_stop, "stop the listening sshd (new connections refused)"),
    "sshd-start": (sshd_start, "start sshd again"),
    "sshd-restart": (sshd_restart, "stop and start sshd (new pid)"),
    "link-down": (link_down, "set the host's veth down inside its namespace (connections hang)"),
    "link-up": (link_up, "set it up again"),
    "blackhole": (blackhole, "drop all traffic on the host's veth with nftables (connections hang)"),
    "unblackhole": (unblackhole, "remove the black hole"),
    "peer-restart": (peer_restart, "restart the host's PSRP peer"),
    "relay-stop": (relay_stop, "stop the host's relay"),
}

PUBLIC_COMMANDS = ["up", "down", "gc", *FAULTS, "relay-start"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostctl.py", description="Real target hosts (netns + sshd + PSRP peer) for e2e tests.",
        epilog="Success: exit 0, JSON on stdout. Failure: exit 1, one line `hostctl: error: ...` on stderr.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(PUBLIC_COMMANDS) + "}")

    p = commands.add_parser("up", help="start hosts; writes and prints DIR/hosts.json")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                   help=f"sshd MaxSessions and MaxStartups (default {DEFAULT_MAX_SESSIONS})")
    p.add_argument("--no-peer", action="store_true", help="do not start the PSRP peer")
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help=f"range for the /30 host links (default {DEFAULT_SUBNET})")
    p.add_argument("--owner-pid", type=int, default=None,
                   help="tear the hosts down when this process exits (default: the caller; 0: never)")

    p = commands.add_parser("down", help="stop everything of the run in DIR and remove it")
    p.add_argument("--state-dir", required=True)

    commands.add_parser("gc", help="remove leftovers of runs whose owner or state dir is gone")

    for name, (_, help_text) in FAULTS.items():
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--state-dir", required=True)
        p.add_argument("host", help="host name, e.g. h0")

    p = commands.add_parser("relay-start", help="delaying TCP relay on loopback in front of the host's sshd")
    p.add_argument("--state-dir", required=True)
    p.add_argument("host")
    p.add_argument("--delay-ms", type=int, required=True, help="added to each direction")
    p.add_argument("--listen", default="127.0.0.1:0")

    p = commands.add_parser("_supervise")
    p.add_argument("--run-id", required=True)
    p = commands.add_parser("_teardown")
    p.add_argument("--run-id", required=True)
    p = commands.add_parser("_relay")
    for option in ("--listen", "--target", "--port-file"):
        p.add_argument(option, required=True)
    p.add_argument("--delay-ms", type=int, required=True)
    p.add_argument("--watch")
    return parser


def dispatch(args: argparse.Namespace) -> Any:
    if args.command == "up":
        # The CLI's caller owns the run by default: a test binary that dies takes its hosts along.
        owner = os.getppid() if args.owner_pid is None else args.owner_pid
        return up(args.state_dir, args.count, max_sessions=args.max_sessions, peer=not args.no_peer,
                  subnet=args.subnet, owner_pid=owner)
    if args.command == "down":
        return down(args.state_dir)
    if args.command == "gc":
        return gc()
    if args.command in FAULTS:
        return FAULTS[args.command][0](args.state_dir, args.host)
    if args.command == "relay-start":
        return relay_start(args.state_dir, args.host, args.delay_ms, args.listen)
    if args.command == "_supervise":
        return supervise(args.run_id)
    if args.command == "_teardown":
        return teardown_run(args.run_id, keep_supervisor=True)
    if args.command == "_relay":
        return relay_main(args)
    raise HostctlError(f"unknown command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = dispatch(args)
    except HostctlError as e:
        print(f"hostctl: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"hostctl: error: {one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hostctl: error: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
