"""python -m psrp_peer --socket PATH --log PATH [--pid-file PATH] [--log-level LEVEL]

One long-lived process per test host. Nothing is written to stdout or stderr after start-up: clients never
see this process's stdio, and the harness reads the log file. SIGTERM/SIGINT stop it (sessions are
abandoned, the socket and pid file removed); SIGUSR1 lists the sessions in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import typing

from psrp_peer.server import PeerServer

log = logging.getLogger("psrp_peer")

STATS_INTERVAL_SECONDS = 60


def parse_args(argv: typing.Optional[typing.Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m psrp_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket to listen on (made mode 0666)")
    parser.add_argument("--log", required=True, help="log file (appended)")
    parser.add_argument("--pid-file", help="write the process id here while running")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def setup_logging(path: str, level: str) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # psrpcore logs every message it queues at DEBUG; keep it quiet unless asked for.
    logging.getLogger("psrpcore").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    logging.captureWarnings(True)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: log.error("event loop: %s", context.get("message"),
                                                                exc_info=context.get("exception")))
    server = PeerServer(args.socket)
    await server.start()
    log.info("peer pid %d serving %s", os.getpid(), args.socket)

    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, server.log_sessions)

    async def log_stats() -> None:
        last = None
        while True:
            await asyncio.sleep(STATS_INTERVAL_SECONDS)
            stats = server.stats()
            if stats != last:
                log.info("stats %s", " ".join(f"{k}={v}" for k, v in stats.items()))
                last = stats

    stats_task = loop.create_task(log_stats())
    await stopping.wait()
    log.info("stopping: %s", server.stats())
    stats_task.cancel()
    await server.stop()
    log.info("stopped")


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log, args.log_level)
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        asyncio.run(serve(args))
    except SystemExit as e:  # refused to start (socket in use)
        log.error("%s", e)
        print(e, file=sys.stderr)
        return 1
    except Exception:
        log.exception("peer crashed")
        return 1
    finally:
        if args.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
