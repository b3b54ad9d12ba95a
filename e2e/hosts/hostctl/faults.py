"""Fault switches on one host: sshd stopped, the link down, a black hole, the peer restarted.

Each takes the state dir and a host name, keeps hosts.json current and returns the host's entry.
The delaying relay is in relay.py.
"""
from __future__ import annotations

from pathlib import Path

from .errors import HostctlError
from .network import HostNet, pin_neighbours
from .peer import spawn_peer, stop_peer, wait_peer_ready
from .processes import is_running
from .sshd import start_sshd, stop_sshd_listener
from .state import live_host
from .util import run

BLACKHOLE_TABLE = "psso_blackhole"


def sshd_stop(state_dir: str | Path, name: str) -> dict:
    """Stop the host's listening sshd: new connections are refused."""
    with live_host(state_dir, name) as (state, host):
        stop_sshd_listener(host)
        return host


def sshd_start(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        if not (host["sshd"]["running"] and is_running(host["sshd"]["pid"])):
            start_sshd(state, host)
        return host


def sshd_restart(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        stop_sshd_listener(host)
        start_sshd(state, host)
        return host


def link_down(state_dir: str | Path, name: str) -> dict:
    """Set the host's veth down, inside its namespace: packets to it are dropped, connections hang."""
    with live_host(state_dir, name) as (state, host):
        run(["ip", "-n", host["netns"], "link", "set", host["veth_host"], "down"])
        host["link_up"] = False
        return host


def link_up(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
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
    with live_host(state_dir, name) as (state, host):
        run(["ip", "netns", "exec", host["netns"], "nft", "-f", "-"], input=blackhole_ruleset(host["veth_host"]))
        host["blackholed"] = True
        return host


def unblackhole(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        if f"inet {BLACKHOLE_TABLE}" in nft_tables(host["netns"]):
            run(["ip", "netns", "exec", host["netns"], "nft", "delete", "table", "inet", BLACKHOLE_TABLE])
        host["blackholed"] = False
        return host


def peer_restart(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        if not host["peer"]:
            raise HostctlError(f"host {name} runs without a peer (up --no-peer)")
        stop_peer(host)
        spawn_peer(state, host)
        wait_peer_ready(state, host)
        return host
