"""Many sessions in one peer process, as a test host serves them: 100 pypsrp pools at once, each through its
own pwsh-shim, with the peer's resident memory measured (printed; run pytest with -s to see the figures)."""

from __future__ import annotations

import asyncio
import os
import time
import typing

import psrp

from conftest import arun, child_pids, process_info, rss_kib

# PSRP_PEER_SCALE_SESSIONS=500 measures a bigger host (each session also costs the client a shim process).
SESSIONS = int(os.environ.get("PSRP_PEER_SCALE_SESSIONS", "100"))


def private_kib(pid: int) -> int:
    """Memory only this process holds (its RSS also counts shared libraries)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup if line.startswith(("Private_Clean:", "Private_Dirty:")))


def test_many_concurrent_sessions_in_one_process(fresh_peer):
    peer = fresh_peer
    figures: typing.Dict[str, typing.Any] = {}

    async def main():
        figures["rss_idle_kib"] = peer.rss_kib()
        all_open = asyncio.Event()
        measured = asyncio.Event()
        opened = 0
        results: typing.Dict[int, typing.Any] = {}

        async def session(i: int) -> None:
            nonlocal opened
            async with psrp.AsyncRunspacePool(process_info(peer)) as rp:
                ps = psrp.AsyncPowerShell(rp)
                ps.add_script("param($Id) $mine = $Id; 1..10 | ForEach-Object { \"$mine/$_\" }").add_parameter("Id", i)
                assert await ps.invoke() == [f"{i}/{n}" for n in range(1, 11)]
                opened += 1
                if opened == SESSIONS:
                    all_open.set()
                await measured.wait()
                # Every session sleeps at the same time: one asyncio process, no session waits for another.
                ps = psrp.AsyncPowerShell(rp)
                ps.add_script("Start-Sleep -Seconds 1; $mine")
                results[i] = await ps.invoke()

        started = time.monotonic()
        tasks = asyncio.gather(*(session(i) for i in range(SESSIONS)))
        try:
            await asyncio.wait_for(all_open.wait(), 90)
            figures["open_seconds"] = round(time.monotonic() - started, 2)
            figures["rss_sessions_kib"] = peer.rss_kib()
            figures["stats"] = await asyncio.to_thread(peer.stats)
            shims = [pid for pid in child_pids() if pid != peer.pid]
            figures["shim_rss_kib"] = rss_kib(shims[0]) if shims else None
            figures["shim_private_kib"] = private_kib(shims[0]) if shims else None
            sleep_started = time.monotonic()
            measured.set()
            await asyncio.wait_for(tasks, 60)
            figures["parallel_sleep_seconds"] = round(time.monotonic() - sleep_started, 2)
        finally:
            measured.set()
            if not tasks.done():
                tasks.cancel()
                await asyncio.gather(tasks, return_exceptions=True)
        assert results == {i: [i] for i in range(SESSIONS)}, "each session kept its own $mine"

    arun(main(), 200)
    stats = figures["stats"]
    assert (stats["sessions"], stats["connections"]) == (SESSIONS, SESSIONS)
    per_session = (figures["rss_sessions_kib"] - figures["rss_idle_kib"]) / SESSIONS
    print(f"\npeer RSS: idle {figures['rss_idle_kib'] / 1024:.1f} MiB, with {SESSIONS} open sessions "
          f"{figures['rss_sessions_kib'] / 1024:.1f} MiB (~{per_session:.0f} KiB per session); "
          f"one shim (socat) RSS {figures['shim_rss_kib']} KiB of which private {figures['shim_private_kib']} KiB; "
          f"{SESSIONS} pools opened in {figures['open_seconds']} s; "
          f"{SESSIONS} concurrent 1 s sleeps took {figures['parallel_sleep_seconds']} s")
    assert figures["parallel_sleep_seconds"] < 5
    assert per_session < 1024, "a session should cost the shared peer well under a MiB"
    deadline = time.monotonic() + 10
    while peer.stats()["sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert peer.stats()["sessions"] == 0, "closed pools leave nothing behind"
