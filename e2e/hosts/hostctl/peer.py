"""The PSRP peer (e2e/peer, written separately): one long-lived process per host, serving the sshd subsystem's
Unix socket and the host's WS-Management listener (WSMAN_PORT on the host's address)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import HostctlError
from .network import tcp_listening, unix_listening
from .paths import PEER_DIR, PEER_MAIN, PYTHON_ENV_SCRIPT, SHIM
from .processes import is_running, read_pid_file, stop_processes
from .supervisor import fail_if_exited, spawn
from .util import READY_TIMEOUT, run, wait_until, write_atomically

PYTHON_ENV_TIMEOUT = 900.0  # the first call creates the venv and installs the pins
WSMAN_PORT = 5985  # WinRM's HTTP port, inside each host's namespace


def resolve_peer_python() -> str:
    """The venv python that has psrpcore, from e2e/python-env.sh (creates the venv on first use)."""
    override = os.environ.get("PSSO_PEER_PYTHON")
    if override:
        return override
    out = run(["bash", str(PYTHON_ENV_SCRIPT)], timeout=PYTHON_ENV_TIMEOUT).stdout.strip().splitlines()
    if not out:
        raise HostctlError(f"{PYTHON_ENV_SCRIPT} printed no venv path")
    return f"{out[-1]}/bin/python"


# The peer options a test may tune per run; the rest (socket, log, listen address, users) is the harness's.
TUNABLE_PEER_OPTIONS = ("--wsman-auto-disconnect", "--wsman-idle-timeout", "--wsman-buffer-bytes",
                        "--wsman-buffer-mode", "--wsman-max-shells-per-user", "--wsman-robust-retention",
                        "--wsman-allow-unencrypted", "--wsman-no-basic", "--wsman-configuration", "--log-level")


def check_peer_args(args: list[str]) -> list[str]:
    """Only `--option=value` (or a bare flag) from TUNABLE_PEER_OPTIONS: one argv entry each, nothing else."""
    for arg in args:
        if arg.split("=", 1)[0] not in TUNABLE_PEER_OPTIONS:
            raise HostctlError(f"--peer-arg {arg!r}: allowed are {', '.join(TUNABLE_PEER_OPTIONS)} as --option=value")
    return list(args)


def check_peer_installed() -> None:
    if not PEER_MAIN.is_file():
        raise HostctlError(f"PSRP peer not found ({PEER_MAIN}); pass --no-peer to start hosts without it")
    if not os.access(SHIM, os.X_OK):
        raise HostctlError(f"subsystem shim {SHIM} missing or not executable; pass --no-peer")


def spawn_peer(state: dict, host: dict) -> None:
    peer = host["peer"]
    Path(peer["socket"]).unlink(missing_ok=True)
    Path(peer["pid_file"]).unlink(missing_ok=True)
    # The WS-Management users are the run's password user (Basic and NTLM check the same password).
    users = Path(host["dir"]) / "wsman-users"
    password_user = state["users"]["password"]
    write_atomically(users, f"{password_user['name']}:{password_user['password']}\n", mode=0o600)
    argv = ["ip", "netns", "exec", host["netns"], state["peer_python"], "-m", "psrp_peer",
            "--socket", peer["socket"], "--log", peer["log"], "--pid-file", peer["pid_file"],
            "--wsman", f"{host['address']}:{host.get('wsman_port', WSMAN_PORT)}", "--wsman-users", str(users),
            *state.get("peer_args", [])]
    peer["pid"] = spawn(state["run_id"], argv, Path(host["dir"]) / "peer.out", env={"PYTHONPATH": str(PEER_DIR)})


def wait_peer_ready(state: dict, host: dict) -> None:
    peer = host["peer"]
    sock = Path(peer["socket"])

    def listening() -> bool:
        # The pid file wins if the peer forked away from the process we spawned.
        pid = read_pid_file(Path(peer["pid_file"]))
        pid = pid if is_running(pid) else peer["pid"]
        if unix_listening(pid, sock) and tcp_listening(pid, host["address"], host.get("wsman_port", WSMAN_PORT)):
            peer["pid"] = pid
            return True
        fail_if_exited(state["run_id"], pid, f"PSRP peer of {host['name']}",
                       Path(host["dir"]) / "peer.out", Path(peer["log"]))
        return False

    wait_until(listening, READY_TIMEOUT, f"the PSRP peer of {host['name']} to listen on {sock} and WSMan")
    # The shim connects as the ssh user, whatever umask the peer bound the socket with.
    sock.chmod(0o666)


def stop_peer(host: dict) -> None:
    peer = host["peer"]
    stop_processes([pid for pid in (peer.get("pid"), read_pid_file(Path(peer["pid_file"]))) if pid])
    Path(peer["socket"]).unlink(missing_ok=True)
    Path(peer["pid_file"]).unlink(missing_ok=True)
    peer["pid"] = None
