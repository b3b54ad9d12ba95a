"""Each host's OpenSSH sshd: its config, host key and listener."""
from __future__ import annotations

from pathlib import Path

from .network import tcp_listening
from .paths import HOSTCTL, SHIM, SSHD
from .processes import stop_processes
from .supervisor import fail_if_exited, spawn
from .users import keygen
from .util import READY_TIMEOUT, run, wait_until, write_atomically

SSH_PORT = 22
DEFAULT_MAX_SESSIONS = 1024


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
        f"Subsystem powershell {state_dir}/{SHIM.name} {host['peer_socket']}",
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
        fail_if_exited(state["run_id"], pid, f"sshd of {host['name']}",
                       Path(host["sshd"]["log"]), Path(host["dir"]) / "sshd.out")
        return False

    wait_until(listening, READY_TIMEOUT, f"sshd of {host['name']} to listen on {host['address']}:{host['port']}")


def start_sshd(state: dict, host: dict) -> None:
    """Spawn sshd and wait until it listens. `up` does the two apart, so that hosts start in parallel."""
    spawn_sshd(state, host)
    wait_sshd_ready(state, host)


def stop_sshd_listener(host: dict) -> None:
    """Stop the listening sshd only. Established sessions live on, as with `systemctl stop ssh`
    (Debian's unit uses KillMode=process): new connections are refused, old ones keep working."""
    stop_processes([pid for pid in (host["sshd"].get("pid"),) if pid])
    Path(host["sshd"]["pid_file"]).unlink(missing_ok=True)
    host["sshd"]["pid"] = None
    host["sshd"]["running"] = False
