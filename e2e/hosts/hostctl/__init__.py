"""Real target hosts for pssession-operator's end-to-end tests.

A host is a Linux network namespace joined to the root namespace by a veth pair. In it run a real
OpenSSH sshd (Debian's /usr/sbin/sshd) and the project's PSRP peer (e2e/peer), which sshd reaches
through its `powershell` subsystem. Faults are real too: stop sshd, set the link down, black-hole the
host with nftables, or put a delaying TCP relay in front of it.

Usable as a CLI (`hostctl.py --help` beside this package; ../README.md) and as a package
(`up`, `down`, `gc` and the fault functions, re-exported here). Everything a test needs is written
to DIR/hosts.json. Python 3.11, stdlib only, run as root.

Processes of a run are spawned by a per-run supervisor process, which is a child subreaper: every
process of the run, and every orphan it leaves (sshd's per-connection children), is reaped by it
rather than by PID 1, which on these machines does not reap. The supervisor also tears the run down
when the process that owns the run (by default the caller of `up`) dies without calling `down`.
"""
from __future__ import annotations

from .addressing import DEFAULT_SUBNET
from .cli import main
from .errors import HostctlError
from .faults import (BLACKHOLE_TABLE, blackhole, link_down, link_up, nft_tables, peer_restart, sshd_restart,
                     sshd_start, sshd_stop, unblackhole)
from .lifecycle import down, gc, up
from .network import netns_list, root_links
from .processes import is_running
from .registry import read_record, run_is_dead
from .relay import relay_start, relay_stop, wsman_relay_stop
from .sshd import DEFAULT_MAX_SESSIONS
from .state import find_host, load_state
from .users import run_users

__all__ = [
    # What the README promises.
    "HostctlError", "up", "down", "gc", "sshd_stop", "sshd_start", "sshd_restart", "link_down", "link_up",
    "blackhole", "unblackhole", "peer_restart", "relay_start", "relay_stop", "wsman_relay_stop", "main",
    "DEFAULT_SUBNET", "DEFAULT_MAX_SESSIONS", "BLACKHOLE_TABLE",
    # What the tests inspect a run with.
    "find_host", "load_state", "is_running", "netns_list", "root_links", "nft_tables", "run_users",
    "read_record", "run_is_dead",
]
