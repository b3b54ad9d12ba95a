"""The namespace host's WS-Management listener (the same PSRP peer process as the ssh subsystem's), proved by
pypsrp's WSMan client from outside the namespace: NTLM with message encryption as the run's password user, the
same script and streams as over SSH, and a disconnected shell found and connected to by a second client.
"""
from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psrp
import pytest
from psrpcore.types import RunspacePoolState

from conftest import hostctl

from test_pypsrp_over_ssh import ALL_STREAMS_SCRIPT, TIMEOUT, check_all_streams, invoke


def wsman_info(state: dict, **kwargs) -> psrp.WSManInfo:
    host = state["hosts"][0]
    user = state["users"]["password"]
    # Host and port rather than a URL: pypsrp 1.0.0b1 only encrypts when it knows the scheme.
    return psrp.WSManInfo(host["address"], scheme="http", port=host["wsman_port"], auth="ntlm",
                          username=user["name"], password=user["password"], **kwargs)


async def wsman_scenario(state: dict) -> None:
    info = wsman_info(state, idle_timeout=120)
    pool = psrp.AsyncRunspacePool(info)
    await pool.open()
    output, ps = await invoke(pool, ALL_STREAMS_SCRIPT)
    check_all_streams(output, ps)
    await pool.disconnect()

    found = [p async for p in psrp.AsyncRunspacePool.get_runspace_pools(wsman_info(state))]
    (other,) = [p for p in found if p._pool.runspace_pool_id == pool._pool.runspace_pool_id]
    assert other.state == RunspacePoolState.Disconnected
    # pypsrp 1.0.0b1 drops message encryption from an enumerated pool's connection info; restore it.
    shell = other.connection_info._shell
    other.connection_info = copy.copy(wsman_info(state))
    other.connection_info._shell = shell
    await other.connect()
    assert (await invoke(other, "$greeting"))[0] == ["hello from pipeline 1"]
    await other.close()


def test_pypsrp_over_wsman_in_the_namespace(peer_hosts):
    host = peer_hosts["hosts"][0]
    assert host["wsman_port"] == 5985
    asyncio.run(asyncio.wait_for(wsman_scenario(peer_hosts), TIMEOUT))


async def timed_pipeline(state: dict, port: int) -> float:
    host = state["hosts"][0]
    user = state["users"]["password"]
    info = psrp.WSManInfo("127.0.0.1", scheme="http", port=port, auth="ntlm", username=user["name"],
                          password=user["password"])
    async with psrp.AsyncRunspacePool(info) as pool:
        started = asyncio.get_running_loop().time()
        assert (await invoke(pool, "Write-Output 'relayed'"))[0] == ["relayed"]
        return asyncio.get_running_loop().time() - started


def test_wsman_relay_adds_latency(peer_hosts, state_dir):
    delay = 0.2
    relay = hostctl.relay_start(state_dir, "h0", delay_ms=int(delay * 1000), service="wsman")["wsman_relay"]
    assert relay["address"] == "127.0.0.1" and relay["port"] > 0
    # A pipeline over WSMan is at least Command + Receive (+ Send): two round trips or more.
    took = asyncio.run(asyncio.wait_for(timed_pipeline(peer_hosts, relay["port"]), TIMEOUT))
    assert took >= 2 * 2 * delay * 0.9, took
    hostctl.wsman_relay_stop(state_dir, "h0")


def test_peer_args_tune_the_wsman_timers(state_dir):
    """`up --peer-arg`: a run whose peers disconnect a vanished client's shell after 1 s and delete it 2 s later
    (tests of vanished clients need not wait Windows' minutes); the options survive peer-restart."""
    with pytest.raises(hostctl.HostctlError, match="allowed are"):
        hostctl.up(state_dir, 1, peer_args=["--socket=/tmp/elsewhere"])
    state = hostctl.up(state_dir, 1, peer_args=["--wsman-auto-disconnect=1", "--wsman-idle-timeout=3"])
    try:
        def peer_cmdline() -> list[str]:
            pid = hostctl.load_state(state_dir)["hosts"][0]["peer"]["pid"]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().decode().split("\0")

        assert "--wsman-auto-disconnect=1" in peer_cmdline()
        hostctl.peer_restart(state_dir, "h0")
        assert "--wsman-idle-timeout=3" in peer_cmdline()

        # A client that vanishes: its process exits in the middle of a job (the kernel closes its TCP
        # connections; no Disconnect, no Delete).
        host, user = state["hosts"][0], state["users"]["password"]
        client = textwrap.dedent(f"""
            import asyncio, os, psrp
            async def main():
                info = psrp.WSManInfo({host['address']!r}, scheme="http", port={host['wsman_port']}, auth="ntlm",
                                      username={user['name']!r}, password={user['password']!r})
                pool = psrp.AsyncRunspacePool(info)
                await pool.open()
                ps = psrp.AsyncPowerShell(pool)
                ps.add_script("Start-Sleep -Seconds 60")
                await ps.invoke_async()
                print(pool._pool.runspace_pool_id, flush=True)
                os._exit(0)
            asyncio.run(main())
        """)
        done = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        shell_id = done.stdout.strip()
        log = Path(state["hosts"][0]["peer"]["log"])
        deadline = time.monotonic() + 20
        while f"shell {shell_id} (" not in log.read_text() or "deleted: idle" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        text = log.read_text()
        assert f"shell {shell_id} ({state['users']['password']['name']}) disconnected (no client" in text
    finally:
        hostctl.down(state_dir)
