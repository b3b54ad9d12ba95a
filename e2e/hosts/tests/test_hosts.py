"""The host harness against real parts: network namespaces, OpenSSH sshd and client, asyncssh, nftables."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import asyncssh
import pytest

from conftest import (HOSTCTL_CLI, assert_run_gone, connect_outcome, hostctl, netns_inodes, run_ssh,
                      ssh_argv, wait_for)

HANG_WAIT = 2.0  # a connect that has not finished after this long counts as hanging


# ------------------------------------------------------------------------------------------------
# up
# ------------------------------------------------------------------------------------------------

def test_up_describes_two_reachable_hosts(hosts, state_dir):
    assert json.loads((state_dir / "hosts.json").read_text()) == hosts
    names = [h["name"] for h in hosts["hosts"]]
    assert names == ["h0", "h1"]
    addresses = [ipaddress.ip_address(h["address"]) for h in hosts["hosts"]]
    assert len(set(addresses)) == 2
    assert all(a in ipaddress.ip_network(hostctl.DEFAULT_SUBNET) for a in addresses)
    assert {h["netns"] for h in hosts["hosts"]} <= set(hostctl.netns_list())

    known = Path(hosts["known_hosts"]).read_text().splitlines()
    assert known == [h["host_keys"][0] for h in hosts["hosts"]]
    for host in hosts["hosts"]:
        assert Path(host["known_hosts"]).read_text().split() == host["host_keys"][0].split()
        assert hostctl.is_running(host["sshd"]["pid"])
        assert connect_outcome(host["address"], 22, 5) == "connected"
        lo = subprocess.run(["ip", "-n", host["netns"], "-j", "link", "show", "lo"], capture_output=True,
                            check=True, timeout=10)
        assert "UP" in json.loads(lo.stdout)[0]["flags"]


def test_parallel_runs_get_separate_hosts(state_dir):
    """Two `up`s at once (as parallel cargo tests would do) get distinct namespaces and addresses."""
    state_dir.chmod(0o711)  # the ssh users must traverse it to reach a/ and b/
    dirs = [state_dir / "a", state_dir / "b"]
    procs = [subprocess.Popen(HOSTCTL_CLI + ["up", "--count", "2", "--no-peer", "--state-dir", str(d),
                                             "--owner-pid", str(os.getpid())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for d in dirs]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
        states = [json.loads(out) for out, _ in outputs]
        hosts = [h for s in states for h in s["hosts"]]
        assert len({h["netns"] for h in hosts}) == 4
        assert len({h["address"] for h in hosts}) == 4
        assert states[0]["users"]["password"]["name"] != states[1]["users"]["password"]["name"]
    finally:
        for d in dirs:
            subprocess.run(HOSTCTL_CLI + ["down", "--state-dir", str(d)], capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------------
# Logging in
# ------------------------------------------------------------------------------------------------

def test_openssh_key_login_on_every_host(hosts):
    for host in hosts["hosts"]:
        result = run_ssh(ssh_argv(hosts, host), "echo hello from $(id -un)")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"hello from {hosts['users']['key']['name']}\n".encode()


async def _asyncssh_run(host: dict, known_hosts: str, command: str, **credentials) -> str:
    async with asyncio.timeout(30):
        async with asyncssh.connect(host["address"], port=host["port"], known_hosts=known_hosts,
                                    agent_path=None, config=[], **credentials) as conn:
            result = await conn.run(command, check=True)
            return result.stdout


def test_password_login_with_asyncssh(hosts):
    host = hosts["hosts"][0]
    user = hosts["users"]["password"]
    out = asyncio.run(_asyncssh_run(host, hosts["known_hosts"], "id -un", username=user["name"],
                                    password=user["password"], client_keys=None))
    assert out == user["name"] + "\n"
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_asyncssh_run(host, hosts["known_hosts"], "true", username=user["name"],
                                  password=user["password"] + "x", client_keys=None))


def test_passphrase_key_login_with_openssh(hosts, state_dir):
    """The encrypted key (OpenSSH format, bcrypt KDF) logs in once its passphrase is given.

    OpenSSH's client, since asyncssh would need the bcrypt package to decrypt it; the passphrase
    comes from an askpass helper, as BatchMode forbids prompting."""
    key = hosts["users"]["passphrase_key"]
    askpass = state_dir / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{key['passphrase']}'\n")
    askpass.chmod(0o700)
    argv = ssh_argv(hosts, hosts["hosts"][1])
    argv[argv.index(hosts["users"]["key"]["private_key"])] = key["private_key"]
    argv[argv.index("BatchMode=yes")] = "BatchMode=no"
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    result = subprocess.run(argv + ["id -un"], capture_output=True, timeout=30, env=env,
                            stdin=subprocess.DEVNULL)
    assert result.stdout == f"{key['name']}\n".encode(), result.stderr

    askpass.write_text("#!/bin/sh\necho wrong\n")
    result = subprocess.run(argv + ["id -un"], capture_output=True, timeout=30, env=env,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 255


def test_password_user_has_no_key_login(hosts):
    key = asyncssh.read_private_key(hosts["users"]["key"]["private_key"])
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_asyncssh_run(hosts["hosts"][0], hosts["known_hosts"], "true",
                                  username=hosts["users"]["password"]["name"], client_keys=[key]))


def test_wrong_host_key_is_refused(hosts, state_dir):
    h0, h1 = hosts["hosts"]
    # h0's address with h1's key: what a client sees when a host is impersonated.
    wrong = state_dir / "wrong_known_hosts"
    wrong.write_text(f"{h0['address']} {' '.join(h1['host_keys'][0].split()[1:])}\n")
    result = run_ssh(ssh_argv(hosts, h0, known_hosts=str(wrong)), "true")
    assert result.returncode == 255
    assert b"Host key verification failed" in result.stderr
    assert b"REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


# ------------------------------------------------------------------------------------------------
# The powershell subsystem
# ------------------------------------------------------------------------------------------------

def _serve_once(path: Path, reply: bytes, received: list[bytes]) -> threading.Thread:
    """A stand-in peer: accept one connection, record what arrives, answer, close."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o666)
    server.listen(1)
    server.settimeout(20)

    def serve():
        with server:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(20)
                received.append(conn.recv(4096))
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_powershell_subsystem_reaches_the_peer_socket(hosts):
    """sshd -> Subsystem powershell -> pwsh-shim (as the ssh user) -> DIR/<host>/peer.sock.

    With --no-peer nothing listens there, so the test listens itself: this checks the plumbing,
    independently of the peer (test_pypsrp_over_ssh.py checks the peer)."""
    host = hosts["hosts"][0]
    received: list[bytes] = []
    thread = _serve_once(Path(host["peer_socket"]), b"pong from the socket\n", received)
    result = run_ssh(ssh_argv(hosts, host, "-s"), "powershell", input=b"ping through sshd\n")
    thread.join(20)
    assert received == [b"ping through sshd\n"]
    assert result.stdout == b"pong from the socket\n", result.stderr


# ------------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------------

async def _open_session(hosts: dict, host: dict) -> asyncssh.SSHClientConnection:
    key = asyncssh.read_private_key(hosts["users"]["key"]["private_key"])
    return await asyncio.wait_for(asyncssh.connect(
        host["address"], port=host["port"], username=hosts["users"]["key"]["name"], client_keys=[key],
        known_hosts=hosts["known_hosts"], agent_path=None, config=[]), 30)


def test_sshd_stop_refuses_new_connections_and_start_restores(hosts, state_dir):
    h0, h1 = hosts["hosts"]

    async def scenario():
        session = await _open_session(hosts, h0)
        async with session:
            stopped = hostctl.sshd_stop(state_dir, "h0")
            assert stopped["sshd"]["running"] is False
            assert connect_outcome(h0["address"], 22, 5) == "refused"
            assert connect_outcome(h1["address"], 22, 5) == "connected"
            # Like `systemctl stop ssh`: established sessions survive the listener.
            result = await asyncio.wait_for(session.run("echo still here", check=True), 20)
            assert result.stdout == "still here\n"

    asyncio.run(scenario())
    started = hostctl.sshd_start(state_dir, "h0")
    assert started["sshd"]["pid"] != h0["sshd"]["pid"]
    assert run_ssh(ssh_argv(hosts, h0), "true").returncode == 0
    assert json.loads((state_dir / "hosts.json").read_text())["hosts"][0]["sshd"]["pid"] == started["sshd"]["pid"]


def test_sshd_restart_gives_a_new_listener(hosts, state_dir):
    old_pid = hosts["hosts"][1]["sshd"]["pid"]
    restarted = hostctl.sshd_restart(state_dir, "h1")
    assert restarted["sshd"]["pid"] != old_pid and not hostctl.is_running(old_pid)
    assert run_ssh(ssh_argv(hosts, restarted), "true").returncode == 0


def _assert_hangs_then_recovers(hosts: dict, state_dir: Path, cut, restore) -> None:
    h0, h1 = hosts["hosts"]
    cut(state_dir, "h0")
    started = time.monotonic()
    assert connect_outcome(h0["address"], 22, HANG_WAIT) == "timeout"  # hangs: not refused, not unreachable
    assert time.monotonic() - started >= HANG_WAIT * 0.9
    assert connect_outcome(h1["address"], 22, 5) == "connected"  # the other host is unaffected
    restore(state_dir, "h0")
    wait_for(lambda: connect_outcome(h0["address"], 22, 2) == "connected", 20, "h0 to be reachable again")
    assert run_ssh(ssh_argv(hosts, h0), "true").returncode == 0


def test_link_down_makes_connections_hang_and_link_up_recovers(hosts, state_dir):
    _assert_hangs_then_recovers(hosts, state_dir, hostctl.link_down, hostctl.link_up)
    assert json.loads((state_dir / "hosts.json").read_text())["hosts"][0]["link_up"] is True


def test_blackhole_makes_connections_hang_and_unblackhole_recovers(hosts, state_dir):
    def cut(state_dir, name):
        hostctl.blackhole(state_dir, name)
        hostctl.blackhole(state_dir, name)  # idempotent
        host = hostctl.find_host(hostctl.load_state(state_dir), name)
        assert host["blackholed"] is True
        assert f"inet {hostctl.BLACKHOLE_TABLE}" in hostctl.nft_tables(host["netns"])

    def restore(state_dir, name):
        hostctl.unblackhole(state_dir, name)
        hostctl.unblackhole(state_dir, name)  # idempotent

    _assert_hangs_then_recovers(hosts, state_dir, cut, restore)


def test_blackhole_stalls_an_established_connection(hosts, state_dir):
    h0 = hosts["hosts"][0]
    with socket.create_connection((h0["address"], 22), timeout=5) as conn:
        assert conn.recv(256).startswith(b"SSH-2.0-")
        hostctl.blackhole(state_dir, "h0")
        conn.sendall(b"SSH-2.0-psso_probe\r\n")  # sshd would answer with its KEXINIT at once
        conn.settimeout(HANG_WAIT)
        with pytest.raises(socket.timeout):
            conn.recv(4096)


def ssh_round_trip(address: str, port: int) -> float:
    """One SSH protocol round trip: sshd sends its KEXINIT only after it has read our banner."""
    with socket.create_connection((address, port), timeout=20) as conn:
        banner = b""
        while not banner.endswith(b"\n"):
            banner += conn.recv(1)
        started = time.monotonic()
        conn.sendall(b"SSH-2.0-psso_probe\r\n")
        assert conn.recv(4096)
        return time.monotonic() - started


def test_relay_adds_the_configured_delay_each_way(hosts, state_dir):
    delay = 0.15
    h0 = hosts["hosts"][0]
    relay = hostctl.relay_start(state_dir, "h0", delay_ms=int(delay * 1000))["relay"]
    assert relay["address"] == "127.0.0.1" and relay["port"] > 0
    direct = statistics.median(ssh_round_trip(h0["address"], 22) for _ in range(3))
    relayed = statistics.median(ssh_round_trip("127.0.0.1", relay["port"]) for _ in range(3))
    # Each direction is delayed, so a round trip takes at least twice the delay. Lower bounds only:
    # a busy machine may add time, never remove it.
    assert relayed >= 2 * delay * 0.95, (direct, relayed)
    assert relayed - direct >= 2 * delay * 0.9, (direct, relayed)

    # A strict OpenSSH client logs in through it with the relay's known_hosts line.
    result = run_ssh(ssh_argv(hosts, h0, known_hosts=relay["known_hosts"], address="127.0.0.1",
                              port=relay["port"]), "echo relayed")
    assert result.stdout == b"relayed\n", result.stderr

    hostctl.relay_stop(state_dir, "h0")
    assert not hostctl.is_running(relay["pid"])
    assert connect_outcome("127.0.0.1", relay["port"], 5) == "refused"


# ------------------------------------------------------------------------------------------------
# Teardown
# ------------------------------------------------------------------------------------------------

def test_down_leaves_nothing_behind(state_dir):
    state = hostctl.up(state_dir, 2, peer=False)
    inodes = netns_inodes(state)
    session = subprocess.Popen(ssh_argv(state, state["hosts"][0]) + ["sleep 120"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hostctl.relay_start(state_dir, "h0", delay_ms=10)
        hostctl.blackhole(state_dir, "h1")
        hostctl.link_down(state_dir, "h1")
        state = hostctl.load_state(state_dir)  # with the relay's pid
        wait_for(lambda: subprocess.run(["pgrep", "-u", state["users"]["key"]["name"]],
                                        capture_output=True).returncode == 0, 20, "the ssh session")
        assert hostctl.down(state_dir)["removed"] is True
        assert_run_gone(state, inodes)
        assert hostctl.down(state_dir)["removed"] is False  # idempotent
        session.wait(20)  # the client sees its session end
    finally:
        session.kill()
        session.wait()
        hostctl.down(state_dir)


@contextlib.contextmanager
def run_with_mortal_owner(state_dir: Path, count: int):
    """A run owned by a `sleep` the test kills (end_owner) to play a test binary that crashed.

    Yields (state, inodes, owner); the owner is killed and the run downed when the block ends."""
    owner = subprocess.Popen(["sleep", "300"])
    try:
        state = hostctl.up(state_dir, count, peer=False, owner_pid=owner.pid)
        yield state, netns_inodes(state), owner
    finally:
        end_owner(owner)
        hostctl.down(state_dir)


def end_owner(owner: subprocess.Popen) -> None:
    owner.kill()  # a no-op once it has been waited for
    owner.wait()


def test_owner_death_tears_the_run_down(state_dir):
    with run_with_mortal_owner(state_dir, 1) as (state, inodes, owner):
        end_owner(owner)
        wait_for(lambda: hostctl.read_record(state["run_id"]) is None, 30, "the supervisor's teardown")
        wait_for(lambda: not hostctl.is_running(state["supervisor_pid"]), 10, "the supervisor to exit")
        assert_run_gone(state, inodes)


def test_gc_removes_a_run_whose_owner_and_supervisor_died(state_dir):
    with run_with_mortal_owner(state_dir, 2) as (state, inodes, owner):
        # Kill the supervisor first, so nothing cleans up on its own: what a crash leaves behind.
        os.kill(state["supervisor_pid"], signal.SIGKILL)
        os.waitpid(state["supervisor_pid"], 0)  # in-process `up`: the supervisor is our child
        assert hostctl.run_is_dead(state["run_id"]) is False  # the owner still lives
        assert state["run_id"] not in hostctl.gc()["removed_runs"]
        end_owner(owner)
        assert hostctl.run_is_dead(state["run_id"])
        assert state["run_id"] in hostctl.gc()["removed_runs"]
        assert_run_gone(state, inodes)


# ------------------------------------------------------------------------------------------------
# CLI contract
# ------------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(HOSTCTL_CLI + list(args), capture_output=True, text=True, timeout=120)


def test_cli_failures_exit_nonzero_with_one_line(state_dir):
    missing = _cli("link-down", "--state-dir", str(state_dir / "nothing"), "h0")
    assert missing.returncode == 1
    assert missing.stderr.startswith("hostctl: error: ") and missing.stderr.count("\n") == 1

    private = state_dir / "private"
    private.mkdir(mode=0o700)
    unreachable = _cli("up", "--count", "1", "--no-peer", "--state-dir", str(private / "run"))
    assert unreachable.returncode == 1
    assert "cannot traverse" in unreachable.stderr and unreachable.stderr.count("\n") == 1


def test_cli_round_trip(state_dir):
    up = _cli("up", "--count", "1", "--no-peer", "--state-dir", str(state_dir), "--owner-pid", str(os.getpid()))
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    inodes = netns_inodes(state)
    try:
        bad_host = _cli("sshd-stop", "--state-dir", str(state_dir), "h5")
        assert bad_host.returncode == 1 and "no host 'h5'" in bad_host.stderr
        relay = _cli("relay-start", "--state-dir", str(state_dir), "h0", "--delay-ms", "5")
        assert relay.returncode == 0, relay.stderr
        assert json.loads(relay.stdout)["relay"]["port"] > 0
        for command in ("sshd-restart", "link-down", "link-up", "blackhole", "unblackhole", "relay-stop"):
            result = _cli(command, "--state-dir", str(state_dir), "h0")
            assert result.returncode == 0, (command, result.stderr)
        assert run_ssh(ssh_argv(state, state["hosts"][0]), "true").returncode == 0
        state = json.loads((state_dir / "hosts.json").read_text())
    finally:
        down = _cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["removed"] is True
    assert_run_gone(state, inodes)
