"""Many WSMan shells in one peer process: N pypsrp pools over NTLM with message encryption at once (default 100;
PSRP_PEER_WSMAN_SCALE_SESSIONS=300 for a bigger host), each setting a variable and running a ten-item pipeline,
then all sleeping 1 s at the same time. Figures are printed (pytest -s)."""

from __future__ import annotations

import asyncio
import os
import time

import psrp

from conftest import WSManPeer, arun, wsman_info

SESSIONS = int(os.environ.get("PSRP_PEER_WSMAN_SCALE_SESSIONS", "100"))


def test_many_wsman_shells_in_one_process(tmp_path):
    peer = WSManPeer(tmp_path, "--wsman-max-shells-per-user", str(SESSIONS))
    try:
        idle = peer.rss_kib()

        async def main():
            pools = [psrp.AsyncRunspacePool(wsman_info(peer)) for _ in range(SESSIONS)]
            started = time.monotonic()
            await asyncio.gather(*(pool.open() for pool in pools))
            opened = time.monotonic() - started

            async def run(pool, i, script):
                ps = psrp.AsyncPowerShell(pool)
                ps.add_script(script).add_parameter("Id", i)
                return await ps.invoke()

            outputs = await asyncio.gather(*(run(pool, i, "param($Id) $mine = $Id; 1..10 | ForEach-Object { \"$mine/$_\" }")
                                             for i, pool in enumerate(pools)))
            assert outputs == [[f"{i}/{n}" for n in range(1, 11)] for i in range(SESSIONS)]
            assert peer.stats()["wsman_shells"] == SESSIONS
            busy = peer.rss_kib()
            started = time.monotonic()
            await asyncio.gather(*(run(pool, i, "param($Id) Start-Sleep -Seconds 1") for i, pool in enumerate(pools)))
            slept = time.monotonic() - started
            await asyncio.gather(*(pool.close() for pool in pools))
            return opened, busy, slept

        opened, busy, slept = arun(main(), 240)
        print(f"\nWSMan/NTLM: {SESSIONS} shells: peer RSS {idle / 1024:.1f} -> {busy / 1024:.1f} MiB "
              f"(~{(busy - idle) / SESSIONS:.0f} KiB per shell), opened in {opened:.2f}s, "
              f"{SESSIONS} concurrent Start-Sleep 1 took {slept:.2f}s")
        assert slept < 30
        assert peer.stats()["wsman_shells"] == 0
    finally:
        peer.stop()
    assert "Traceback" not in peer.log_text()
