"""Fixtures for the host harness tests: each test makes its own hosts and tears them down."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HOSTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HOSTS_DIR))

import hostctl  # noqa: E402  (needs the path above)

HOSTCTL_CLI = [sys.executable, str(HOSTS_DIR / "hostctl.py")]
TEST_TIMEOUT = 240  # seconds; a safety net over the bounded waits inside each test


@pytest.fixture(autouse=True)
def bounded_test():
    """Fail a test that runs longer than TEST_TIMEOUT instead of hanging the suite (no plugin needed)."""
    def expire(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def state_dir():
    """A fresh state dir. Under /tmp, not pytest's tmp_path: the ssh users must traverse every
    parent, and pytest's base temp dir is 0700."""
    path = Path(tempfile.mkdtemp(prefix="psso-hosts-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _up_and_down(state_dir: Path, count: int, peer: bool):
    state = hostctl.up(state_dir, count, peer=peer)
    inodes = netns_inodes(state)
    try:
        yield state
    finally:
        hostctl.down(state_dir)
    assert_run_gone(state, inodes)


@pytest.fixture
def hosts(state_dir):
    """Two hosts without the PSRP peer: enough for the ssh and fault tests, and faster."""
    yield from _up_and_down(state_dir, 2, peer=False)


@pytest.fixture
def peer_hosts(state_dir):
    """One host with the PSRP peer behind sshd's powershell subsystem."""
    yield from _up_and_down(state_dir, 1, peer=True)


# ------------------------------------------------------------------------------------------------
# Helpers shared by the tests
# ------------------------------------------------------------------------------------------------

def netns_inodes(state: dict) -> set[int]:
    """Inodes of the run's namespaces: `ip netns del` only drops the name, so a process left inside
    would keep a namespace alive unseen; its /proc/PID/ns/net still names the inode."""
    return {os.stat(f"/run/netns/{host['netns']}").st_ino for host in state["hosts"]}


def processes_in_namespaces(inodes: set[int]) -> list[int]:
    links = {f"net:[{ino}]" for ino in inodes}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") in links and hostctl.is_running(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_processes_of(state: dict) -> list[int]:
    """Live processes that belong to the run: recorded pids, or anything mentioning its state dir."""
    recorded = [state["supervisor_pid"]]
    for host in state["hosts"]:
        recorded.append(host["sshd"]["pid"])
        if host["peer"]:
            recorded.append(host["peer"]["pid"])
        for relay in (host["relay"], host.get("wsman_relay")):
            if relay:
                recorded.append(relay["pid"])
    alive = {pid for pid in recorded if pid and hostctl.is_running(pid)}
    marker = state["state_dir"].encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes() and hostctl.is_running(int(entry.name)):
                    alive.add(int(entry.name))
            except OSError:
                pass
    return sorted(alive)


def assert_run_gone(state: dict, inodes: set[int] = frozenset()) -> None:
    """Nothing of the run is left: namespace, veth, nft table, process, user, registry record."""
    run_id = state["run_id"]
    assert processes_in_namespaces(inodes) == []
    assert not [n for n in hostctl.netns_list() if run_id in n]
    assert not [link for link in hostctl.root_links() if run_id in link]
    assert not [t for t in hostctl.nft_tables() if "psso" in t]
    assert run_processes_of(state) == []
    assert run_id not in hostctl.run_users()
    assert hostctl.read_record(run_id) is None


def connect_outcome(address: str, port: int, timeout: float) -> str:
    """'connected', 'refused', 'timeout' or the error's name, for one TCP connect."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return type(e).__name__ + f"({e.errno})"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def ssh_argv(state: dict, host: dict, *extra: str, known_hosts: str | None = None,
             port: int | None = None, address: str | None = None) -> list[str]:
    """OpenSSH client as a strict test client: key login only, host key must match."""
    user = state["users"]["key"]
    return ["ssh", "-F", "/dev/null",
            "-i", user["private_key"], "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or state['known_hosts']}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            "-p", str(port or host["port"]), *extra,
            f"{user['name']}@{address or host['address']}"]


def run_ssh(argv: list[str], command: str | None = None, *, input: bytes | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv + ([command] if command else []), input=input, capture_output=True,
                          timeout=timeout)
