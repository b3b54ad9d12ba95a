"""A delaying TCP relay in front of a host's sshd: latency as a fault, since `tc netem` is not in
these kernels. Both sides are here: relay-start/relay-stop, and the relay process they spawn
(the hidden `_relay` subcommand)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from pathlib import Path

from .errors import HostctlError
from .paths import HOSTCTL
from .processes import is_running, process_start_time, stop_processes
from .state import live_host
from .supervisor import fail_if_exited, spawn
from .util import READY_TIMEOUT, wait_until, write_atomically

RELAY_CHUNK = 65536
RELAY_QUEUE_CHUNKS = 64  # per direction; bounds memory and gives backpressure to the sender


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        address = ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        raise HostctlError(f"--listen {text!r}: want ADDRESS:PORT, e.g. 127.0.0.1:0") from None
    if not sep or not address.is_loopback or not 0 <= port_number <= 65535:
        raise HostctlError(f"--listen {text!r}: must be a loopback ADDRESS:PORT")
    return str(address), port_number


# What a relay can stand in front of: the host entry's key for the relay, and for the port it forwards to.
RELAY_SERVICES = {"ssh": ("relay", "port"), "wsman": ("wsman_relay", "wsman_port")}


def relay_start(state_dir: str | Path, name: str, delay_ms: int, listen: str = "127.0.0.1:0",
                service: str = "ssh") -> dict:
    """Put a TCP relay on loopback in front of the host's sshd (or, service="wsman", its WS-Management
    listener), delaying each direction by delay_ms.

    Replaces a relay already running for that service. Returns the host; its `relay` (`wsman_relay`) has the port.
    """
    listen_address, listen_port = parse_listen(listen)
    if not 0 <= delay_ms <= 600_000:
        raise HostctlError("--delay-ms must be in 0..600000")
    if service not in RELAY_SERVICES:
        raise HostctlError(f"--service must be one of {', '.join(RELAY_SERVICES)}")
    key, port_key = RELAY_SERVICES[service]
    with live_host(state_dir, name) as (state, host):
        if not host.get(port_key):
            raise HostctlError(f"host {name} has no {service} listener (up --no-peer?)")
        _stop_relay(host, key)
        host_dir = Path(host["dir"])
        port_file = host_dir / f"{key}.port"
        log = host_dir / f"{key}.log"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, str(HOSTCTL), "_relay", "--listen", f"{listen_address}:{listen_port}",
                "--target", f"{host['address']}:{host[port_key]}", "--delay-ms", str(delay_ms),
                "--port-file", str(port_file), "--watch", f"/run/netns/{host['netns']}"]
        pid = spawn(state["run_id"], argv, log)
        port = _wait_relay_port(state, host, pid, port_file, log)
        entry = {"pid": pid, "start_time": process_start_time(pid), "address": listen_address,
                 "port": port, "delay_ms": delay_ms, "log": str(log)}
        if service == "ssh":
            key_type, key_data = host["host_keys"][0].split()[1:3]
            host_spec = f"[{listen_address}]:{port}" if port != 22 else listen_address
            known_hosts_line = f"{host_spec} {key_type} {key_data}"
            write_atomically(host_dir / "relay_known_hosts", known_hosts_line + "\n", mode=0o644)
            entry.update(known_hosts=str(host_dir / "relay_known_hosts"), known_hosts_line=known_hosts_line)
        host[key] = entry
        return host


def _wait_relay_port(state: dict, host: dict, pid: int, port_file: Path, log: Path) -> int:
    def port() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(port_file.read_text())
        fail_if_exited(state["run_id"], pid, f"relay of {host['name']}", log)
        return None

    return wait_until(port, READY_TIMEOUT, f"the relay of {host['name']} to listen")


def _stop_relay(host: dict, key: str = "relay") -> None:
    relay = host.get(key)
    if relay and is_running(relay["pid"], relay.get("start_time")):
        stop_processes([relay["pid"]])
    host[key] = None


def relay_stop(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        _stop_relay(host)
        return host


def wsman_relay_stop(state_dir: str | Path, name: str) -> dict:
    with live_host(state_dir, name) as (state, host):
        _stop_relay(host, "wsman_relay")
        return host


# --------------------------------------------------------------------------------------------------
# The relay process
# --------------------------------------------------------------------------------------------------

async def relay_direction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, delivering each chunk `delay` seconds after it was read.

    Reading and delivering are separate tasks, so the delay is latency, not a throughput cap.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(RELAY_QUEUE_CHUNKS)

    async def receive() -> None:
        while True:
            chunk = await reader.read(RELAY_CHUNK)
            await queue.put((loop.time() + delay, chunk))
            if not chunk:
                return

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:  # EOF travels with the same delay, as a FIN would
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    async with asyncio.TaskGroup() as group:
        group.create_task(receive())
        group.create_task(deliver())


async def relay_connection(client_reader, client_writer, target: tuple[str, int], delay: float) -> None:
    try:
        server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*target), 60)
    except (OSError, asyncio.TimeoutError) as e:
        print(f"relay: connect to {target[0]}:{target[1]} failed: {e}", flush=True)
        client_writer.close()
        return
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(relay_direction(client_reader, server_writer, delay))
            group.create_task(relay_direction(server_reader, client_writer, delay))
    except* (OSError, asyncio.IncompleteReadError):
        pass  # a reset on either side ends the connection on both
    finally:
        client_writer.close()
        server_writer.close()


async def relay_serve(listen: tuple[str, int], target: tuple[str, int], delay: float, port_file: Path,
                      watch: Path | None) -> None:
    connections: set[asyncio.Task] = set()

    async def accept(reader, writer) -> None:
        task = asyncio.current_task()
        connections.add(task)
        try:
            await relay_connection(reader, writer, target, delay)
        finally:
            connections.discard(task)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(accept, *listen)
    write_atomically(port_file, str(server.sockets[0].getsockname()[1]), mode=0o644)
    # Exit with the host: if its namespace is gone, the run was torn down without us.
    while not stop.is_set() and (watch is None or watch.exists()):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    server.close()
    for task in connections:
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)


def relay_main(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    asyncio.run(relay_serve(parse_listen(args.listen), (host, int(port)), args.delay_ms / 1000.0,
                            Path(args.port_file), Path(args.watch) if args.watch else None))
