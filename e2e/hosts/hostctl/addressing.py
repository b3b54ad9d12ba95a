"""One /30 per host from a dedicated range, avoiding other runs' blocks and routes that are not ours."""
from __future__ import annotations

import contextlib
import ipaddress

from .errors import HostctlError
from .network import VETH_RE
from .registry import all_records
from .util import run

DEFAULT_SUBNET = "10.213.0.0/16"

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
