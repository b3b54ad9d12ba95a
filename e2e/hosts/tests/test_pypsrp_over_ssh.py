"""Proof that the peer speaks PSRP, independent of the project's own client.

pypsrp 1.0.0b1 (`import psrp`), a third-party PowerShell Remoting client, connects over real SSH
(asyncssh, strict host key checking) to sshd in a namespace host, whose `powershell` subsystem runs
the pwsh-shim into the host's PSRP peer. Scripts stay inside the peer's grammar (DESIGN.md) and are
valid PowerShell too: the preference variables make a real host emit verbose and debug records.
"""
from __future__ import annotations

import asyncio

import asyncssh
import psrp
from psrpcore.types import PSInvocationState, RunspacePoolState
import pytest

from conftest import hostctl

TIMEOUT = 60  # seconds for one whole scenario

ALL_STREAMS_SCRIPT = """
$VerbosePreference = 'Continue'
$DebugPreference = 'Continue'
$greeting = 'hello from pipeline 1'
Write-Output 'out1'
Write-Error 'err1'
Write-Warning 'warn1'
Write-Verbose 'verbose1'
Write-Debug 'debug1'
Write-Information 'info1'
Write-Progress -Activity 'a' -PercentComplete 50
1..3 | ForEach-Object { Write-Output $_ }
"""


def ssh_info(state: dict, auth: str) -> psrp.SSHInfo:
    host = state["hosts"][0]
    if auth == "key":
        user = state["users"]["key"]
        credentials = {"client_keys": [user["private_key"]]}
    else:
        user = state["users"]["password"]
        credentials = {"password": user["password"], "client_keys": None}
    options = asyncssh.SSHClientConnectionOptions(
        username=user["name"], known_hosts=state["known_hosts"], agent_path=None, config=[], **credentials)
    return psrp.SSHInfo(host["address"], port=host["port"], options=options)


async def invoke(pool: psrp.AsyncRunspacePool, script: str) -> tuple[list, psrp.AsyncPowerShell]:
    ps = psrp.AsyncPowerShell(pool)
    ps.add_script(script)
    return await ps.invoke(), ps


def check_all_streams(output: list, ps: psrp.AsyncPowerShell) -> None:
    assert output == ["out1", 1, 2, 3]
    assert ps.state == PSInvocationState.Completed
    assert ps.had_errors
    streams = ps.streams
    assert [str(e) for e in streams.error] == ["err1"]
    assert "WriteErrorException" in streams.error[0].FullyQualifiedErrorId
    assert [w.Message for w in streams.warning] == ["warn1"]
    assert [v.Message for v in streams.verbose] == ["verbose1"]
    assert [d.Message for d in streams.debug] == ["debug1"]
    assert [i.MessageData for i in streams.information] == ["info1"]
    assert [(p.Activity, p.PercentComplete) for p in streams.progress] == [("a", 50)]


async def session_scenario(info: psrp.SSHInfo) -> psrp.AsyncRunspacePool:
    async with psrp.AsyncRunspacePool(info) as pool:
        assert pool.state == RunspacePoolState.Opened

        output, ps = await invoke(pool, ALL_STREAMS_SCRIPT)
        check_all_streams(output, ps)

        # Session state: a variable set by the first pipeline is there for the next one.
        output, ps = await invoke(pool, "$greeting")
        assert output == ["hello from pipeline 1"] and not ps.had_errors

        # A terminating error fails the pipeline; the session stays usable.
        with pytest.raises(psrp.PipelineFailed, match="boom"):
            await invoke(pool, "throw 'boom'")
        output, _ = await invoke(pool, "Write-Output $greeting")
        assert output == ["hello from pipeline 1"]
    return pool


@pytest.mark.parametrize("auth", ["key", "password"])
def test_pypsrp_runs_pipelines_with_every_stream_over_ssh(peer_hosts, auth):
    pool = asyncio.run(asyncio.wait_for(session_scenario(ssh_info(peer_hosts, auth)), TIMEOUT))
    assert pool.state == RunspacePoolState.Closed


def test_peer_restart_serves_new_sessions(peer_hosts, state_dir):
    async def one_pipeline() -> list:
        async with psrp.AsyncRunspacePool(ssh_info(peer_hosts, "key")) as pool:
            output, _ = await invoke(pool, "Write-Output 'alive'")
            return output

    old_pid = peer_hosts["hosts"][0]["peer"]["pid"]
    host = hostctl.peer_restart(state_dir, "h0")
    assert host["peer"]["pid"] != old_pid and not hostctl.is_running(old_pid)
    assert asyncio.run(asyncio.wait_for(one_pipeline(), TIMEOUT)) == ["alive"]
