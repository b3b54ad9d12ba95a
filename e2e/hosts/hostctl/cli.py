"""The command line: argparse, dispatch, and the exit-status and one-line-error contract."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from .addressing import DEFAULT_SUBNET
from .errors import HostctlError
from .faults import blackhole, link_down, link_up, peer_restart, sshd_restart, sshd_start, sshd_stop, unblackhole
from .lifecycle import down, gc, teardown_run, up
from .relay import RELAY_SERVICES, relay_main, relay_start, relay_stop, wsman_relay_stop
from .sshd import DEFAULT_MAX_SESSIONS
from .supervisor import supervise
from .util import one_line

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
    "wsman-relay-stop": (wsman_relay_stop, "stop the host's WS-Management relay"),
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
    p.add_argument("--peer-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every host's PSRP peer, repeatable; only --wsman-* tuning options, "
                        "e.g. --peer-arg=--wsman-auto-disconnect=5")

    p = commands.add_parser("down", help="stop everything of the run in DIR and remove it")
    p.add_argument("--state-dir", required=True)

    commands.add_parser("gc", help="remove leftovers of runs whose owner or state dir is gone")

    for name, (_, help_text) in FAULTS.items():
        p = commands.add_parser(name, help=help_text)
        p.add_argument("--state-dir", required=True)
        p.add_argument("host", help="host name, e.g. h0")

    p = commands.add_parser("relay-start", help="delaying TCP relay on loopback in front of the host's sshd "
                                                "(or its WS-Management listener)")
    p.add_argument("--state-dir", required=True)
    p.add_argument("host")
    p.add_argument("--delay-ms", type=int, required=True, help="added to each direction")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--service", choices=sorted(RELAY_SERVICES), default="ssh", help="what the relay forwards to")

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
                  subnet=args.subnet, owner_pid=owner, peer_args=args.peer_arg)
    if args.command == "down":
        return down(args.state_dir)
    if args.command == "gc":
        return gc()
    if args.command in FAULTS:
        return FAULTS[args.command][0](args.state_dir, args.host)
    if args.command == "relay-start":
        return relay_start(args.state_dir, args.host, args.delay_ms, args.listen, args.service)
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
