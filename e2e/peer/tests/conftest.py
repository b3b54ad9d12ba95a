"""Fixtures for the peer's tests: a real peer process on a temporary socket, time limits, no strays.

Every test is bounded: async work runs under asyncio.wait_for (see arun), and a watchdog
(faulthandler) ends the whole run if a test hangs anyway. Peer processes get PR_SET_PDEATHSIG so they die
with pytest even then; each test checks that it left no child processes behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

PEER_DIR = Path(__file__).resolve().parents[1]
SHIM = PEER_DIR / "pwsh-shim"
TEST_WATCHDOG_SECONDS = 300

if str(PEER_DIR) not in sys.path:
    sys.path.insert(0, str(PEER_DIR))


def arun(coro: typing.Awaitable, timeout: float = 30) -> typing.Any:
    """Run one test's async body with a hard time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_pids() -> typing.List[int]:
    me = os.getpid()
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            children.append(int(entry))
    return children


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Peer:
    """A running `python -m psrp_peer` with its socket and log."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "peer.sock"
        self.log = directory / "peer.log"
        self.pid_file = directory / "peer.pid"
        env = dict(os.environ, PYTHONPATH=str(PEER_DIR))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "psrp_peer", "--socket", str(self.socket), "--log", str(self.log),
             "--pid-file", str(self.pid_file)],
            cwd=PEER_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
        )
        # Ready once it says so (a socket file alone may be a stale one from an earlier peer).
        ready = f"peer pid {self.process.pid} serving"
        deadline = time.monotonic() + 15
        while ready not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"peer did not start: {self.process.stderr.read().decode()!r}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the peer log within {timeout}s:\n{self.log_text()[-3000:]}")

    def stats(self, timeout: float = 10) -> typing.Dict[str, int]:
        """Ask the peer for its counters (SIGUSR1 writes them to the log) and parse the newest line."""
        before = self.log_text().count("stats ")
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.log_text().splitlines() if " stats " in line]
            if len(lines) > before:
                fields = lines[-1].split(" stats ", 1)[1].split()
                return {k: int(v) for k, v in (f.split("=") for f in fields)}
            time.sleep(0.05)
        raise AssertionError("peer did not report stats")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr:
            self.process.stderr.close()


@pytest.fixture(autouse=True)
def _watchdog_and_no_strays():
    faulthandler.dump_traceback_later(TEST_WATCHDOG_SECONDS, exit=True)
    before = set(child_pids())
    yield
    faulthandler.cancel_dump_traceback_later()
    deadline = time.monotonic() + 5
    while (strays := set(child_pids()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not strays, f"test left child processes behind: {sorted(strays)}"


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> typing.Iterator[Peer]:
    """One peer for a whole module, as a test host has: sessions of all tests share the process."""
    p = Peer(tmp_path_factory.mktemp("peer"))
    yield p
    assert p.alive(), f"peer died:\n{p.log_text()[-3000:]}"
    p.stop()
    assert "Traceback" not in p.log_text(), p.log_text()[-5000:]


@pytest.fixture
def fresh_peer(tmp_path) -> typing.Iterator[Peer]:
    """A peer of the test's own (for RSS figures and counters nobody else disturbs)."""
    p = Peer(tmp_path)
    yield p
    p.stop()


def process_info(peer: Peer):
    import psrp

    return psrp.ProcessInfo(executable=str(SHIM), arguments=[str(peer.socket)])


WSMAN_USERS = {"alice": "Alice-pa55!", "bob": "Bob-pa55!"}


class WSManPeer(Peer):
    """A peer serving WS-Management on a loopback ephemeral port (and no Unix socket)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.socket = directory / "unused.sock"
        self.log = directory / "peer.log"
        self.pid_file = directory / "peer.pid"
        users = directory / "users"
        users.write_text("".join(f"{u}:{p}\n" for u, p in WSMAN_USERS.items()))
        env = dict(os.environ, PYTHONPATH=str(PEER_DIR))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "psrp_peer", "--wsman", "127.0.0.1:0", "--wsman-users", str(users),
             "--wsman-port-file", str(directory / "wsman.port"),
             "--log", str(self.log), "--pid-file", str(self.pid_file), *extra],
            cwd=PEER_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
        )
        ready = f"peer pid {self.process.pid} serving wsman "
        deadline = time.monotonic() + 15
        while ready not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"peer did not start: {self.process.stderr.read().decode()!r}\n{self.log_text()}")
            time.sleep(0.02)
        line = next(l for l in self.log_text().splitlines() if ready in l)
        self.url = line.split(ready, 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        assert int((directory / "wsman.port").read_text()) == self.port


def wsman_info(peer: "WSManPeer", user: str = "alice", auth: str = "ntlm", password: typing.Optional[str] = None,
               **kwargs: typing.Any):
    import psrp

    # Host and port, not a URL: with a URL pypsrp 1.0.0b1 leaves its scheme unset and never encrypts.
    return psrp.WSManInfo("127.0.0.1", scheme="http", port=peer.port, auth=auth, username=user,
                          password=WSMAN_USERS[user] if password is None else password, **kwargs)
