"""The namespace host's WS-Management listener (the same PSRP peer process as the ssh subsystem's), proved by
pypsrp's WSMan client from outside the namespace: NTLM with message encryption as the run's password user, the
same script and streams as over SSH, and a disconnected shell found and connected to by a second client.
"""
from __future__ import annotations

import asyncio
import copy

import psrp
from psrpcore.types import RunspacePoolState

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
