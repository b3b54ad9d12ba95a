"""up, down and gc: a run's whole life, and teardown that also finds what a half-made run left."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import secrets
from pathlib import Path

from .addressing import DEFAULT_SUBNET, allocate_blocks
from .errors import HostctlError
from .locking import GLOBAL_LOCK
from .network import NETNS_RE, VETH_RE, HostNet, create_network, netns_list, netns_pids, root_links
from .peer import WSMAN_PORT, check_peer_args, check_peer_installed, resolve_peer_python, spawn_peer, wait_peer_ready
from .processes import is_running, process_start_time, stop_processes
from .registry import RunRecord, all_records, read_record, registry_path, run_is_dead, supervisor_socket, write_record
from .sshd import DEFAULT_MAX_SESSIONS, SSH_PORT, spawn_sshd, wait_sshd_ready, write_host_files
from .state import hosts_json, load_state, prepare_state_dir, save_state
from .supervisor import start_supervisor, stop_supervisor
from .users import make_users, remove_user, run_users
from .util import require_root, run, write_atomically


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
        # The peer's WS-Management listener (none without a peer): http://address:wsman_port/wsman.
        "wsman_port": WSMAN_PORT if with_peer else None,
        "sshd": {"pid": None, "running": False, "config": str(host_dir / "sshd_config"),
                 "log": str(host_dir / "sshd.log"), "pid_file": str(host_dir / "sshd.pid")},
        "peer": {"pid": None, "socket": str(host_dir / "peer.sock"), "log": str(host_dir / "peer.log"),
                 "pid_file": str(host_dir / "peer.pid")} if with_peer else None,
        "link_up": True,
        "blackholed": False,
        "relay": None,
        "wsman_relay": None,
    }


def up(state_dir: str | Path, count: int, *, max_sessions: int = DEFAULT_MAX_SESSIONS, peer: bool = True,
       subnet: str = DEFAULT_SUBNET, owner_pid: int | None = None, peer_args: list[str] | None = None) -> dict:
    """Start `count` hosts; write and return DIR/hosts.json.

    owner_pid: the run is torn down when this process dies (default: the calling process;
    0: never, only by `down` or when the state dir is removed).
    peer_args: extra `--wsman-*` options for every host's peer (shorter timers, a smaller buffer for tests);
    kept in hosts.json, so `peer-restart` starts the peer the same way.
    """
    peer_args = check_peer_args(peer_args or [])
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
        return _bring_up(record, blocks, state_dir, max_sessions, peer_python, peer_args)
    except BaseException:
        with contextlib.suppress(Exception):
            teardown_run(run_id, state_dir)
        raise


def _bring_up(record: RunRecord, blocks: list[ipaddress.IPv4Network], state_dir: Path,
              max_sessions: int, peer_python: str | None, peer_args: list[str]) -> dict:
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
        "peer_args": peer_args,
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
        relays = [h[key] for h in state["hosts"] for key in ("relay", "wsman_relay") if h.get(key)]
        stop_processes([r["pid"] for r in relays if is_running(r["pid"], r.get("start_time"))])
