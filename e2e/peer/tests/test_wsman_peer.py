"""The WS-Management peer driven by pypsrp's own WSMan client (psrp.WSManInfo, pypsrp 1.0.0b1): NTLM with
message encryption and Basic, scripts with output and streams, session state, stop, disconnect and connect from a
new client (Receive-PSSession), enumeration, quota, refused idle timeouts, unencrypted bodies and wrong
passwords, and clients that vanish in the middle of a job (Block and Drop buffering, idle timeout).
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import textwrap
import time
import typing

import psrp
from psrpcore.types import RunspacePoolState
import pytest
from psrp._exceptions import WSManFault, WSManHTTPError

from conftest import PEER_DIR, WSMAN_USERS, WSManPeer, arun, wsman_info


@pytest.fixture(scope="module")
def wsman_peer(tmp_path_factory) -> typing.Iterator[WSManPeer]:
    p = WSManPeer(tmp_path_factory.mktemp("wsman"), "--wsman-max-shells-per-user", "4")
    yield p
    assert p.alive(), p.log_text()[-3000:]
    p.stop()
    assert "Traceback" not in p.log_text(), p.log_text()[-5000:]


@pytest.fixture
def own_peer(tmp_path) -> typing.Callable[..., WSManPeer]:
    peers: typing.List[WSManPeer] = []

    def start(*extra: str) -> WSManPeer:
        peer = WSManPeer(tmp_path / f"p{len(peers)}", *extra) if (tmp_path / f"p{len(peers)}").mkdir() is None else None
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
        assert "Traceback" not in peer.log_text(), peer.log_text()[-5000:]


async def run(pool: psrp.AsyncRunspacePool, script: str) -> typing.Tuple[list, psrp.AsyncPowerShell]:
    ps = psrp.AsyncPowerShell(pool)
    ps.add_script(script)
    output = await ps.invoke()
    return output, ps


async def shells_of(info: psrp.WSManInfo) -> typing.Dict[str, psrp.AsyncRunspacePool]:
    """Get-PSSession -ComputerName: the user's shells, each ready for a connect from this new client."""
    pools = {}
    async for pool in psrp.AsyncRunspacePool.get_runspace_pools(info):
        # pypsrp 1.0.0b1 rebuilds the connection info of an enumerated pool from the URL, which drops its
        # message encryption; give it the caller's settings back, keeping the enumerated shell.
        found = pool.connection_info
        pool.connection_info = copy.copy(info)
        pool.connection_info._shell = found._shell
        pool.connection_info.configuration_name = found.configuration_name
        pools[str(pool._pool.runspace_pool_id)] = pool
    return pools


def test_ntlm_encrypted_output_streams_and_state(wsman_peer):
    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer)) as pool:
            output, ps = await run(pool, "$greeting = 'hello'; Write-Output 'one'; Write-Warning 'careful'; "
                                         "Write-Verbose 'detail' -Verbose; Write-Error 'bad'; 1..3 | ForEach-Object { $_ }")
            assert output == ["one", 1, 2, 3]
            assert [w.Message for w in ps.streams.warning] == ["careful"]
            assert [v.Message for v in ps.streams.verbose] == ["detail"]
            assert [e.Exception.Message for e in ps.streams.error] == ["bad"]
            assert ps.had_errors
            output, _ = await run(pool, '"$greeting world"')
            assert output == ["hello world"]
            with pytest.raises(psrp.PipelineFailed, match="boom"):
                await run(pool, "throw 'boom'")
    arun(body())
    log = wsman_peer.log_text()
    assert "created by alice" in log


def test_large_output_crosses_many_receives(wsman_peer):
    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer)) as pool:
            output, _ = await run(pool, "1..3 | ForEach-Object { 'x' * 400000 }; 1..2000 | ForEach-Object { $_ }")
            assert [len(s) for s in output[:3]] == [400000] * 3
            assert output[3:] == list(range(1, 2001))
    arun(body(), 60)


def test_basic_auth_needs_allow_unencrypted(own_peer, wsman_peer):
    peer = own_peer("--wsman-allow-unencrypted")

    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(peer, "bob", auth="basic", encryption="never")) as pool:
            assert (await run(pool, "Write-Output 'basic'"))[0] == ["basic"]
        # AllowUnencrypted=false (the default): Basic over HTTP is not offered; Windows answers 401.
        with pytest.raises(WSManHTTPError) as error:
            async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, "bob", auth="basic", encryption="never")):
                pass
        assert error.value.http_code == 401
    arun(body())


def test_wrong_password_is_401(wsman_peer):
    async def body():
        for auth, encryption in (("ntlm", "auto"), ("basic", "never")):
            with pytest.raises(WSManHTTPError) as error:
                async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, password="wrong", auth=auth,
                                                             encryption=encryption)):
                    pass
            assert error.value.http_code == 401
    arun(body())


def test_unencrypted_ntlm_body_refused(wsman_peer):
    async def body():
        with pytest.raises(WSManHTTPError) as error:
            async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, encryption="never")):
                pass
        assert error.value.http_code == 500
    arun(body())
    assert "unencrypted body from alice refused" in wsman_peer.log_text()


def test_stop_a_running_pipeline(wsman_peer):
    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer)) as pool:
            ps = psrp.AsyncPowerShell(pool)
            ps.add_script("Write-Output 'started'; Start-Sleep -Seconds 60; Write-Output 'never'")
            task = await ps.invoke_async()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await ps.stop()
            with pytest.raises(psrp.PipelineStopped):
                await task
            assert time.monotonic() - started < 5
            assert (await run(pool, "Write-Output 'after'"))[0] == ["after"]
    arun(body())


def test_quota_limit_fault(wsman_peer):
    async def body():
        pools = []
        try:
            for _ in range(4):
                pool = psrp.AsyncRunspacePool(wsman_info(wsman_peer, "bob"))
                await pool.open()
                pools.append(pool)
            with pytest.raises(WSManFault) as error:
                await psrp.AsyncRunspacePool(wsman_info(wsman_peer, "bob")).open()
            assert error.value.code == 2150859173
            assert "maximum number of 4 shells" in str(error.value)
        finally:
            for pool in pools:
                await pool.close()
        # freed: a new one opens again
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, "bob")):
            pass
    arun(body(), 60)


def test_disconnect_idle_timeout_under_60s_refused(wsman_peer):
    async def body():
        pool = psrp.AsyncRunspacePool(wsman_info(wsman_peer, idle_timeout=30))
        await pool.open()
        try:
            with pytest.raises(WSManFault) as error:
                await pool.disconnect()
            assert "less than the minimum of 60 seconds" in str(error.value)
        finally:
            pool._pool.state = RunspacePoolState.Opened  # the client marked it Disconnecting
            await pool.close()
    arun(body())


def test_disconnect_then_connect_from_new_client_receives_buffered_output(wsman_peer):
    async def body():
        info = wsman_info(wsman_peer, idle_timeout=120, buffer_mode=psrp.OutputBufferingMode.BLOCK)
        pool = psrp.AsyncRunspacePool(info)
        await pool.open()
        await run(pool, "$kept = 'state survives'")
        ps = psrp.AsyncPowerShell(pool)
        ps.add_script("1..40 | ForEach-Object { \"line $_\"; Start-Sleep -Milliseconds 50 }")
        first = psrp.AsyncPSDataCollection()
        task = await ps.invoke_async(output_stream=first)
        await asyncio.sleep(0.6)
        await pool.disconnect()
        task.cancel()
        pool_id = str(pool._pool.runspace_pool_id)
        await asyncio.sleep(2.5)  # the job finishes while nobody is connected

        # A NEW client (nothing shared with the first) finds the shell by enumeration and connects to it.
        shells = await shells_of(wsman_info(wsman_peer, idle_timeout=120))
        assert shells[pool_id].state == RunspacePoolState.Disconnected
        new_pool = shells[pool_id]
        await new_pool.connect()
        pipelines = new_pool.create_disconnected_power_shells()
        assert len(pipelines) == 1
        rest = await pipelines[0].connect()
        lines = list(first) + rest
        assert lines == [f"line {i}" for i in range(1, 41)], lines
        assert (await run(new_pool, "$kept"))[0] == ["state survives"]
        await new_pool.close()
        assert pool_id not in await shells_of(wsman_info(wsman_peer))
    arun(body(), 60)


def test_enumerate_lists_only_the_users_shells(wsman_peer):
    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, "alice")) as alice_pool:
            ps = psrp.AsyncPowerShell(alice_pool)
            ps.add_script("Start-Sleep -Seconds 30")
            task = await ps.invoke_async()
            await asyncio.sleep(0.3)
            alice = await shells_of(wsman_info(wsman_peer, "alice"))
            bob = await shells_of(wsman_info(wsman_peer, "bob"))
            shell_id = str(alice_pool._pool.runspace_pool_id)
            assert shell_id in alice and shell_id not in bob
            assert alice[shell_id].state == RunspacePoolState.Opened  # connected: not available to others
            assert not alice[shell_id].is_available
            await ps.stop()
            with pytest.raises(psrp.PipelineStopped):
                await task
    arun(body())


VANISHING_CLIENT = textwrap.dedent("""
    import asyncio, os, sys
    sys.path.insert(0, {tests!r})
    import psrp
    from conftest import WSManPeer, wsman_info

    class Peer:
        port = {port}

    async def main():
        pool = psrp.AsyncRunspacePool(wsman_info(Peer()))
        await pool.open()
        ps = psrp.AsyncPowerShell(pool)
        ps.add_script({script!r})
        out = psrp.AsyncPSDataCollection()
        await ps.invoke_async(output_stream=out)
        for _ in range(200):
            if len(out):
                break
            await asyncio.sleep(0.05)
        print(pool._pool.runspace_pool_id, flush=True)
        os._exit(0)  # vanish: no Disconnect, no Delete; the kernel closes the TCP connections

    asyncio.run(main())
""")


def vanish(peer: WSManPeer, script: str) -> str:
    code = VANISHING_CLIENT.format(tests=str(PEER_DIR / "tests"), port=peer.port, script=script)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=str(PEER_DIR)))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def reconnect_and_receive(peer: WSManPeer, shell_id: str, timeout: float = 15) -> list:
    deadline = time.monotonic() + timeout
    while True:
        shells = await shells_of(wsman_info(peer))
        if shell_id in shells and shells[shell_id].state == RunspacePoolState.Disconnected:
            break
        assert time.monotonic() < deadline, f"shell {shell_id} not disconnected: {list(shells)}"
        await asyncio.sleep(0.2)
    pool = shells[shell_id]
    await pool.connect()
    (pipeline,) = pool.create_disconnected_power_shells()
    output = await pipeline.connect()
    await pool.close()
    return output


BIG_LINES = "$pad = 'x' * 1000; 1..1000 | ForEach-Object { \"$_ $pad\" }"  # ~1 MiB, the buffer 64 KiB


def test_vanished_client_block_keeps_every_line(own_peer):
    peer = own_peer("--wsman-auto-disconnect", "1", "--wsman-buffer-bytes", "65536", "--wsman-buffer-mode", "Block")
    shell_id = vanish(peer, BIG_LINES)
    time.sleep(2)
    stats = peer.stats()
    assert stats["wsman_shells"] == 1 and stats["pipelines"] == 1  # blocked on the full buffer, not finished
    output = arun(reconnect_and_receive(peer, shell_id), 60)
    numbers = [int(line.split(" ", 1)[0]) for line in output]
    assert numbers == list(range(numbers[0], 1001)), numbers[:5]
    # Only what went out to the vanished client before it died is missing: a few Receive responses.
    assert numbers[0] < 500
    assert "disconnected (no client for the auto-disconnect time): BufferMode Block" in peer.log_text()


def test_vanished_client_drop_discards_oldest(own_peer):
    peer = own_peer("--wsman-auto-disconnect", "1", "--wsman-buffer-bytes", "65536", "--wsman-buffer-mode", "Drop")
    shell_id = vanish(peer, BIG_LINES)
    deadline = time.monotonic() + 20
    while peer.stats()["pipelines"] and time.monotonic() < deadline:  # Drop: the job runs to its end
        time.sleep(0.2)
    assert peer.stats()["pipelines"] == 0
    output = arun(reconnect_and_receive(peer, shell_id), 60)
    numbers = [int(line.split(" ", 1)[0]) for line in output]
    assert numbers[-1] == 1000 and len(numbers) < 100, numbers  # the newest kept, the oldest dropped
    assert numbers == sorted(numbers)


def test_vanished_client_shell_removed_after_idle_timeout(own_peer):
    peer = own_peer("--wsman-auto-disconnect", "1", "--wsman-idle-timeout", "3")
    shell_id = vanish(peer, "1..1000 | ForEach-Object { $_; Start-Sleep -Milliseconds 10 }")
    assert peer.stats()["wsman_shells"] == 1
    peer.wait_for_log(f"shell {shell_id} (alice) deleted: idle for 3s", timeout=15)
    assert peer.stats()["wsman_shells"] == 0 and peer.stats()["pipelines"] == 0


def self_signed(directory) -> typing.Tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_listener_with_basic_and_ntlm(own_peer, tmp_path):
    cert, key = self_signed(tmp_path)
    peer = own_peer("--wsman-cert", cert, "--wsman-key", key)
    assert peer.url.startswith("https://")

    async def body():
        for auth in ("basic", "ntlm"):
            info = psrp.WSManInfo("127.0.0.1", scheme="https", port=peer.port, auth=auth, username="bob",
                                  password=WSMAN_USERS["bob"], verify=cert)
            async with psrp.AsyncRunspacePool(info) as pool:
                assert (await run(pool, "Write-Output 'over tls'"))[0] == ["over tls"]
    arun(body())


def test_pypsrp_classic_api_ntlm_encrypted(wsman_peer):
    """pypsrp's older, synchronous API (pypsrp.wsman over requests, with its own message encryption code)."""
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    wsman = WSMan("127.0.0.1", port=wsman_peer.port, ssl=False, auth="ntlm", username="alice",
                  password=WSMAN_USERS["alice"], operation_timeout=5, read_timeout=10)
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("$kept = 'classic'; Write-Output $kept; Write-Warning 'careful'")
        assert ps.invoke() == ["classic"]
        assert [w.message for w in ps.streams.warning] == ["careful"]
        ps = PowerShell(pool)
        ps.add_script("$kept")
        assert ps.invoke() == ["classic"]
        ps = PowerShell(pool)
        ps.add_script("Write-Output 'before'; Start-Sleep -Seconds 30")
        ps.begin_invoke()
        time.sleep(0.5)
        ps.stop()
        assert ps.state == 3  # PSInvocationState.Stopped in pypsrp.complex_objects


def test_negotiate_with_spnego_wrapped_ntlm(wsman_peer):
    """auth="negotiate": pyspnego's initiator wraps NTLM in SPNEGO (no Kerberos here), as Windows clients do."""
    async def body():
        async with psrp.AsyncRunspacePool(wsman_info(wsman_peer, "bob", auth="negotiate")) as pool:
            assert (await run(pool, "Write-Output 'spnego'"))[0] == ["spnego"]
    arun(body())
