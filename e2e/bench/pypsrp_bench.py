"""The pypsrp side of `psrp-bench` (e2e/src/bin/psrp-bench.rs): pypsrp 1.0.0b1's SSH client (asyncssh), or
with `--wsman` its WS-Management client (psrp.WSManInfo, NTLM with message encryption).

Driven over stdio so the Rust benchmark can interleave rounds: it reads one JSON request per line on
stdin and answers each with one JSON line on stdout, measured inside this process (wall clock with
perf_counter, CPU with getrusage(RUSAGE_SELF) user+sys, RSS from /proc/self/statm). Requests:

    {"workload": "open", "count": N}         open + close N sessions; open latencies
    {"workload": "pipelines", "count": N}    N x `Write-Output 1` on one open session; latencies
    {"workload": "concurrent", "count": N}   N sessions open at once (up to 50 opening at a time)
    {"workload": "quit"}

Every wait is bounded (asyncio.wait_for). Usage: python pypsrp_bench.py HOSTS_JSON
or: python pypsrp_bench.py --wsman HOST PORT USER PASSWORD
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

import asyncssh
import psrp

SCRIPT = "Write-Output 1"
STEP = 30.0  # seconds for any one open, pipeline or close
OPENING_AT_ONCE = 50


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ssh_info(state: dict) -> psrp.SSHInfo:
    host = state["hosts"][0]
    user = state["users"]["key"]
    # The key is read once, as the Rust side decodes it once.
    key = asyncssh.read_private_key(user["private_key"])
    options = asyncssh.SSHClientConnectionOptions(
        username=user["name"], known_hosts=state["known_hosts"], agent_path=None, config=[], client_keys=[key])
    return psrp.SSHInfo(host["address"], port=host["port"], options=options)


def wsman_info(host: str, port: str, user: str, password: str) -> psrp.WSManInfo:
    # Host, scheme and port, not a URL: with a URL pypsrp 1.0.0b1 never encrypts (see the peer's README).
    return psrp.WSManInfo(host, scheme="http", port=int(port), auth="ntlm", username=user, password=password)


async def open_pool(info: psrp.SSHInfo) -> psrp.AsyncRunspacePool:
    pool = psrp.AsyncRunspacePool(info)
    await asyncio.wait_for(pool.open(), STEP)
    return pool


async def pipeline(pool: psrp.AsyncRunspacePool) -> None:
    ps = psrp.AsyncPowerShell(pool)
    ps.add_script(SCRIPT)
    output = await asyncio.wait_for(ps.invoke(), STEP)
    if output != [1]:
        raise RuntimeError(f"unexpected output {output!r}")


async def opens(info: psrp.SSHInfo, count: int) -> dict:
    latencies = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        pool = await open_pool(info)
        latencies.append(time.perf_counter() - start)
        await asyncio.wait_for(pool.close(), STEP)
    return {"latencies": latencies, "cpu": cpu_seconds() - cpu0, "wall": time.perf_counter() - wall0}


async def pipelines(info: psrp.SSHInfo, count: int) -> dict:
    pool = await open_pool(info)
    try:
        latencies = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for _ in range(count):
            start = time.perf_counter()
            await pipeline(pool)
            latencies.append(time.perf_counter() - start)
        return {"latencies": latencies, "cpu": cpu_seconds() - cpu0, "wall": time.perf_counter() - wall0}
    finally:
        await asyncio.wait_for(pool.close(), STEP)


async def concurrent(info: psrp.SSHInfo, count: int) -> dict:
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one() -> psrp.AsyncRunspacePool:
        async with gate:
            return await open_pool(info)

    rss0, cpu0, wall0 = rss_bytes(), cpu_seconds(), time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    wall, cpu, rss = time.perf_counter() - wall0, cpu_seconds() - cpu0, rss_bytes()
    pools = [p for p in results if isinstance(p, psrp.AsyncRunspacePool)]
    errors = [repr(e) for e in results if not isinstance(e, psrp.AsyncRunspacePool)]
    # Every session still works while all are open.
    if pools:
        await pipeline(pools[0])
    await asyncio.gather(*(asyncio.wait_for(p.close(), STEP) for p in pools), return_exceptions=True)
    return {"opened": len(pools), "errors": errors[:3], "wall": wall, "cpu": cpu, "rss_delta": rss - rss0}


async def main(args: list) -> None:
    if args[0] == "--wsman":
        info = wsman_info(*args[1:5])
    else:
        with open(args[0]) as f:
            info = ssh_info(json.load(f))
    loop = asyncio.get_running_loop()
    workloads = {"open": opens, "pipelines": pipelines, "concurrent": concurrent}
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        request = json.loads(line)
        if request["workload"] == "quit":
            return
        try:
            answer = await workloads[request["workload"]](info, int(request["count"]))
        except Exception as e:  # noqa: BLE001 - reported to the driver, which fails the run
            answer = {"error": repr(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
