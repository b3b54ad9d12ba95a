"""A network namespace per host, joined to the root namespace by a veth pair, and what listens in it."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from pathlib import Path

from .util import run

# Names carry the run id so parallel runs and leftovers of dead runs never clash, and `gc` can
# tell which run a namespace or veth belongs to. Interface names are limited to 15 bytes.
NETNS_RE = re.compile(r"^psso-([0-9a-f]{6})-h(\d+)$")
VETH_RE = re.compile(r"^pso([0-9a-f]{6})[rn](\d+)$")


@dataclasses.dataclass(frozen=True)
class HostNet:
    name: str  # h<i>
    netns: str
    veth_root: str
    veth_host: str
    gateway: str  # root side of the /30
    address: str  # namespace side of the /30: where sshd listens

    @classmethod
    def for_block(cls, run_id: str, index: int, block: ipaddress.IPv4Network) -> "HostNet":
        return cls(name=f"h{index}", netns=f"psso-{run_id}-h{index}",
                   veth_root=f"pso{run_id}r{index}", veth_host=f"pso{run_id}n{index}",
                   gateway=str(block.network_address + 1), address=str(block.network_address + 2))

    @classmethod
    def from_host(cls, host: dict) -> "HostNet":
        return cls(name=host["name"], netns=host["netns"], veth_root=host["veth_root"],
                   veth_host=host["veth_host"], gateway=host["gateway"], address=host["address"])


def create_network(net: HostNet) -> None:
    run(["ip", "netns", "add", net.netns])
    run(["ip", "link", "add", net.veth_root, "type", "veth", "peer", "name", net.veth_host, "netns", net.netns])
    run(["ip", "addr", "add", f"{net.gateway}/30", "dev", net.veth_root])
    run(["ip", "link", "set", net.veth_root, "up"])
    run(["ip", "-n", net.netns, "link", "set", "lo", "up"])
    run(["ip", "-n", net.netns, "addr", "add", f"{net.address}/30", "dev", net.veth_host])
    run(["ip", "-n", net.netns, "link", "set", net.veth_host, "up"])
    pin_neighbours(net)


def link_mac(dev: str, netns: str | None = None) -> str:
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["link", "show", "dev", dev]
    return json.loads(run(argv).stdout)[0]["address"]


def pin_neighbours(net: HostNet) -> None:
    """Permanent ARP entries on both sides.

    Without them a link that is down makes ARP fail after ~3 s and connect() return EHOSTUNREACH;
    with them packets are dropped silently and connections hang, as on a cut somewhere on the path,
    which is the fault the tests mean by "link down".
    """
    run(["ip", "neigh", "replace", net.address, "lladdr", link_mac(net.veth_host, net.netns),
         "dev", net.veth_root, "nud", "permanent"])
    run(["ip", "-n", net.netns, "neigh", "replace", net.gateway, "lladdr", link_mac(net.veth_root),
         "dev", net.veth_host, "nud", "permanent"])


def netns_list() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def root_links() -> list[str]:
    return [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)]


def tcp_listening(pid: int, address: str, port: int) -> bool:
    """Whether the namespace of `pid` has a TCP listener on address:port.

    Read from /proc rather than by connecting, so it works while the host is black-holed.
    """
    want = f"{socket.htonl(int(ipaddress.IPv4Address(address))):08X}:{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in lines))


def unix_listening(pid: int, path: Path) -> bool:
    """Whether a listening Unix socket bound to `path` exists in the namespace of `pid`."""
    so_acceptcon = 0x10000
    try:
        lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    except OSError:
        return False
    for fields in (line.split() for line in lines):
        if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & so_acceptcon:
            return True
    return False
