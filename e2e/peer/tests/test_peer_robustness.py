"""Clients that misbehave must cost only their own session: vanishing without Close, malformed packets,
protocol violations. The peer process and every other session carry on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psrp
import pytest

from conftest import PEER_DIR, SHIM, Peer, arun, process_info
from rawclient import EMPTY, RawClient, data_line, guid_line

POOL = str(EMPTY)


async def check_other_session(peer: Peer, rp: psrp.AsyncRunspacePool, marker: str) -> None:
    ps = psrp.AsyncPowerShell(rp)
    ps.add_script(f"$seen = '{marker}'; $seen")
    assert await asyncio.wait_for(ps.invoke(), 10) == [marker]
    assert peer.alive()


def fragment(object_id: int, message_type: int, body: bytes, fragment_id: int = 0, flags: int = 3) -> bytes:
    message = struct.pack("<II", 2, message_type) + bytes(32) + body
    return struct.pack(">QQBI", object_id, fragment_id, flags, len(message)) + message


BAD_INPUT = {
    "not xml": b"garbage\n",
    "unknown element": b"<Bogus PSGuid='%s' />\n" % POOL.encode(),
    "ack from a client": b"<DataAck PSGuid='%s' />\n" % POOL.encode(),
    "signal for the pool": guid_line("Signal"),
    "command for the pool": guid_line("Command"),
    "bad base64": b"<Data Stream='Default' PSGuid='%s'>***</Data>\n" % POOL.encode(),
    "bad guid": b"<Close PSGuid='nope' />\n",
    "invalid utf-8": b"<Close PSGuid='\xff\xfe' />\n",
    "doctype": b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><Close PSGuid='%s' />\n" % POOL.encode(),
    "truncated fragment": data_line(b"\x00\x01\x02"),
    "fragment without start": data_line(fragment(90, 0x00021002, b"<Obj/>", fragment_id=3, flags=2)),
    "broken clixml": data_line(fragment(91, 0x00021002, b"<Obj RefId='0'><MS><I32 N='ci'>1")),
    "wrong message object": data_line(fragment(92, 0x00021002, b"<S>not a SetMaxRunspaces</S>")),
    "oversized line": b"<Data Stream='Default' PSGuid='%s'>" % POOL.encode() + b"A" * (9 * 1024 * 1024) + b"</Data>\n",
}


@pytest.mark.parametrize("line", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_malformed_input_drops_only_that_session(peer, line):
    async def main():
        async with psrp.AsyncRunspacePool(process_info(peer)) as other:
            bad = await RawClient.connect(str(peer.socket))
            await bad.open()
            assert await bad.run("$mine = 1; 'ok'") == ["ok"]
            with contextlib.suppress(ConnectionError):  # the peer may hang up while a long line is still going out
                await bad.send(line)
            assert await bad.closed_by_peer(10), "the peer must drop the misbehaving session"
            await bad.close()
            await check_other_session(peer, other, "unharmed")

    arun(main())
    assert "dropping session" in peer.log_text()


def test_garbage_before_anything_else(peer):
    async def main():
        async with psrp.AsyncRunspacePool(process_info(peer)) as other:
            bad = await RawClient.connect(str(peer.socket))
            await bad.send(b"\x00\x01\x02 hello\n")
            assert await bad.closed_by_peer(10)
            await bad.close()
            await check_other_session(peer, other, "fine")

    arun(main())


def test_tolerated_oddities_keep_the_session(peer):
    """What PowerShell tolerates, the peer tolerates: unknown PSRP message types (ignored), data, signal
    and close for pipelines that do not exist (acknowledged), blank lines."""

    async def main():
        client = await RawClient.connect(str(peer.socket))
        await client.open()
        stray = uuid.uuid4()
        await client.send(data_line(fragment(500, 0x00099999, b"<Obj/>")))  # a message type nobody knows
        await client.until("DataAck")
        await client.send(b"\n  \n")
        await client.send(data_line(b"anything", stray))
        await client.until("DataAck", stray)
        await client.send(guid_line("Signal", stray))
        await client.until("SignalAck", stray)
        await client.send(guid_line("Close", stray))
        await client.until("CloseAck", stray)
        assert await client.run("'alive'") == ["alive"]
        await client.close()

    arun(main())


def test_client_vanishing_without_close_does_not_hurt_others(fresh_peer):
    """Over OutOfProc/SSH there is no disconnect: a vanished client's runspace ends with its connection
    (its running pipeline is stopped); other sessions do not notice."""

    async def main():
        async with psrp.AsyncRunspacePool(process_info(fresh_peer)) as other:
            await check_other_session(fresh_peer, other, "before")
            vanishing = []
            for _ in range(5):
                client = await RawClient.connect(str(fresh_peer.socket))
                await client.open()
                await client.start("Start-Sleep -Seconds 120")
                vanishing.append(client)
            never_opened = await RawClient.connect(str(fresh_peer.socket))
            stats = await asyncio.to_thread(fresh_peer.stats)
            assert (stats["sessions"], stats["pipelines"], stats["connections"]) == (6, 5, 7)

            for client in vanishing + [never_opened]:
                client.abort()
            deadline = time.monotonic() + 10
            while (stats := await asyncio.to_thread(fresh_peer.stats))["sessions"] != 1:
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.1)
            assert (stats["pipelines"], stats["connections"]) == (0, 1)
            await check_other_session(fresh_peer, other, "after")

    arun(main())
    assert fresh_peer.log_text().count("abandoned: connection lost without Close") == 5


def test_peer_learns_the_user_from_so_peercred(fresh_peer):
    async def main():
        client = await RawClient.connect(str(fresh_peer.socket))
        await client.open()
        await client.close()

    arun(main())
    fresh_peer.wait_for_log(f"opened by {pwd.getpwuid(os.getuid()).pw_name} "
                            f"(uid {os.getuid()}, pid {os.getpid()})")


def test_socket_is_world_connectable(fresh_peer):
    assert oct(fresh_peer.socket.stat().st_mode & 0o777) == "0o666"


def test_sigterm_stops_cleanly_with_sessions_open(fresh_peer):
    async def main():
        client = await RawClient.connect(str(fresh_peer.socket))
        await client.open()
        await client.start("Start-Sleep -Seconds 120")
        fresh_peer.process.send_signal(signal.SIGTERM)
        assert await client.closed_by_peer(10)
        await client.close()

    arun(main())
    assert fresh_peer.process.wait(10) == 0
    assert not fresh_peer.socket.exists() and not fresh_peer.pid_file.exists()
    assert "Traceback" not in fresh_peer.log_text()


def test_one_peer_per_socket_and_stale_sockets_are_replaced(tmp_path):
    first = Peer(tmp_path)
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "psrp_peer", "--socket", str(first.socket), "--log", str(tmp_path / "second.log")],
            cwd=PEER_DIR, env=dict(os.environ, PYTHONPATH=str(PEER_DIR)), capture_output=True, timeout=30)
        assert refused.returncode == 1 and b"already serves" in refused.stderr
        assert first.alive()
    finally:
        first.process.kill()  # leaves its socket file behind, as a crash would
        first.process.wait(10)
        first.stop()
    assert first.socket.exists()
    second = Peer(tmp_path)
    try:
        async def main():
            client = await RawClient.connect(str(second.socket))
            await client.open()
            assert await client.run("'replaced'") == ["replaced"]
            await client.close()

        arun(main())
    finally:
        second.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch users")
def test_any_user_can_connect_and_is_recognised():
    """The shim runs as the ssh user; the 0666 socket lets it in, SO_PEERCRED names it."""
    directory = Path(tempfile.mkdtemp(prefix="psrp-peer-"))
    directory.chmod(0o755)  # the user must reach the socket
    # The checkout may be out of the user's reach (a 0700 clone): run a copy of the shim beside the socket.
    shim = directory / SHIM.name
    shutil.copyfile(SHIM, shim)
    shim.chmod(0o755)
    peer = Peer(directory)
    try:
        info = psrp.ProcessInfo(executable=shutil.which("setpriv"), arguments=[
            "--reuid=65534", "--regid=65534", "--clear-groups", str(shim), str(peer.socket)])

        async def main():
            async with psrp.AsyncRunspacePool(info) as rp:
                ps = psrp.AsyncPowerShell(rp)
                ps.add_script("'as nobody'")
                assert await asyncio.wait_for(ps.invoke(), 10) == ["as nobody"]

        arun(main())
        peer.wait_for_log(f"opened by {pwd.getpwuid(65534).pw_name} (uid 65534")
    finally:
        peer.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_mutated_sessions_never_hurt_the_peer(peer):
    """Valid session openings with random bytes flipped inside their PSRP fragments: each connection works
    or is dropped, and the peer never logs an unexpected error (the module fixture checks for tracebacks)."""
    import base64
    import random

    import psrpcore

    rng = random.Random(1234)
    pool = psrpcore.ClientRunspacePool()
    pool.open()
    opening = pool.data_to_send().data
    ps = psrpcore.ClientPowerShell(pool)
    ps.add_script("1..3 | ForEach-Object { \"n$_\" }")
    pool.state = psrpcore.types.RunspacePoolState.Opened
    ps.start()
    create = pool.data_to_send().data

    def mutate(blob: bytes) -> bytes:
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    async def one(index: int) -> None:
        client = await RawClient.connect(str(peer.socket))
        try:
            first, second = (mutate(opening), create) if index % 2 else (opening, mutate(create))
            await client.send(data_line(first))
            await client.send(guid_line("Command", ps.pipeline_id))
            await client.send(b"<Data Stream='Default' PSGuid='%s'>%s</Data>\n"
                              % (str(ps.pipeline_id).encode(), base64.b64encode(second)))
            await client.send(guid_line("Close", ps.pipeline_id) + guid_line("Close"))
            await asyncio.sleep(0.05)  # let the peer chew on it before the client hangs up
        except ConnectionError:
            pass
        finally:
            await client.close()

    async def main():
        for batch in range(4):
            await asyncio.gather(*(one(batch * 50 + i) for i in range(50)))
        async with psrp.AsyncRunspacePool(process_info(peer)) as other:
            await check_other_session(peer, other, "after the fuzz")

    arun(main(), 120)
    assert peer.alive()
