"""python -m psrp_peer [--socket PATH] [--wsman HOST:PORT --wsman-users FILE ...] --log PATH [--pid-file PATH]

One long-lived process per test host, serving the out-of-process (SSH subsystem) sessions on a Unix socket,
the WS-Management listener, or both, with one registry of sessions. Nothing is written to stdout or stderr
after start-up: clients never see this process's stdio, and the harness reads the log file. SIGTERM/SIGINT stop
it (sessions are abandoned, the socket and pid file removed); SIGUSR1 lists the sessions in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import typing

from psrp_peer.engine import Registry
from psrp_peer.server import PeerServer, rss_bytes
from psrp_peer.wsman.auth import Users
from psrp_peer.wsman.listener import ListenerSettings, WSManListener
from psrp_peer.wsman.service import DEFAULT_CONFIGURATIONS, ServiceSettings
from psrp_peer.wsman.shell import ShellSettings

log = logging.getLogger("psrp_peer")

STATS_INTERVAL_SECONDS = 60


def parse_args(argv: typing.Optional[typing.Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m psrp_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="Unix socket to listen on (made mode 0666)")
    parser.add_argument("--log", required=True, help="log file (appended)")
    parser.add_argument("--pid-file", help="write the process id here while running")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    wsman = parser.add_argument_group("WS-Management listener")
    wsman.add_argument("--wsman", metavar="HOST:PORT", help="serve WS-Management on this address (port 0: any)")
    wsman.add_argument("--wsman-users", metavar="FILE", help="user:password lines (Basic and NTLM)")
    wsman.add_argument("--wsman-port-file", metavar="PATH",
                       help="write the listening port here once serving (for --wsman HOST:0)")
    wsman.add_argument("--wsman-allow-unencrypted", action="store_true",
                       help="accept plain SOAP bodies over HTTP (WinRM's AllowUnencrypted=true)")
    wsman.add_argument("--wsman-no-basic", action="store_true", help="do not offer Basic authentication")
    wsman.add_argument("--wsman-cert", metavar="PEM", help="serve HTTPS with this certificate (and --wsman-key)")
    wsman.add_argument("--wsman-key", metavar="PEM")
    wsman.add_argument("--wsman-max-shells-per-user", type=int, default=30, metavar="N")
    wsman.add_argument("--wsman-buffer-bytes", type=int, default=1024 * 1024, metavar="BYTES",
                       help="output a shell holds before Block waits or Drop discards")
    wsman.add_argument("--wsman-buffer-mode", choices=["Block", "Drop"], default="Block",
                       help="OutputBufferingMode of the session configuration")
    wsman.add_argument("--wsman-idle-timeout", type=float, default=7200.0, metavar="SECONDS",
                       help="a shell without a client is deleted after this (Windows: 2 h)")
    wsman.add_argument("--wsman-auto-disconnect", type=float, default=180.0, metavar="SECONDS",
                       help="a shell whose client vanished becomes Disconnected after this")
    wsman.add_argument("--wsman-robust-retention", type=float, default=180.0, metavar="SECONDS",
                       help="how long responses are kept for robust connection retransmission")
    wsman.add_argument("--wsman-configuration", action="append", metavar="NAME",
                       help="session configuration names served (default: %s)" % ", ".join(DEFAULT_CONFIGURATIONS))
    args = parser.parse_args(argv)
    if not args.socket and not args.wsman:
        parser.error("give --socket, --wsman, or both")
    if args.wsman and not args.wsman_users:
        parser.error("--wsman needs --wsman-users")
    if bool(args.wsman_cert) != bool(args.wsman_key):
        parser.error("--wsman-cert and --wsman-key go together")
    return args


def wsman_settings(args: argparse.Namespace) -> ListenerSettings:
    host, _, port = args.wsman.rpartition(":")
    tls = None
    if args.wsman_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.wsman_cert, args.wsman_key)
    return ListenerSettings(
        host=host.strip("[]") or "0.0.0.0",
        port=int(port),
        users=Users.from_file(args.wsman_users),
        allow_unencrypted=args.wsman_allow_unencrypted,
        basic=not args.wsman_no_basic,
        tls=tls,
        service=ServiceSettings(
            max_shells_per_user=args.wsman_max_shells_per_user,
            configurations=tuple(args.wsman_configuration or DEFAULT_CONFIGURATIONS),
            shell=ShellSettings(buffer_bytes=args.wsman_buffer_bytes, buffer_mode=args.wsman_buffer_mode,
                                idle_timeout=args.wsman_idle_timeout, auto_disconnect=args.wsman_auto_disconnect),
            robust_retention=args.wsman_robust_retention,
        ),
    )


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
    registry = Registry()
    server: typing.Optional[PeerServer] = None
    listener: typing.Optional[WSManListener] = None
    ntlm_dir: typing.Optional[str] = None
    try:
        if args.socket:
            socket_server = PeerServer(args.socket, registry)
            await socket_server.start()  # SystemExit when another peer serves the socket: leave it alone
            server = socket_server
            log.info("peer pid %d serving %s", os.getpid(), args.socket)
        if args.wsman:
            settings = wsman_settings(args)
            # pyspnego's NTLM acceptor reads the users' passwords from the file NTLM_USER_FILE names.
            ntlm_dir = tempfile.mkdtemp(prefix="psrp-peer-ntlm-")
            store = os.path.join(ntlm_dir, "users")
            settings.users.write_ntlm_store(store)
            os.environ["NTLM_USER_FILE"] = store
            wsman_listener = WSManListener(settings, registry)
            await wsman_listener.start()
            listener = wsman_listener
            if args.wsman_port_file:
                # Written whole then renamed: a reader never sees a partial number.
                with open(args.wsman_port_file + ".tmp", "w") as f:
                    f.write(f"{listener.port}\n")
                os.replace(args.wsman_port_file + ".tmp", args.wsman_port_file)
            log.info("peer pid %d serving wsman %s://%s:%d/wsman", os.getpid(), listener.scheme, settings.host,
                     listener.port)

        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)

        def stats() -> typing.Dict[str, int]:
            figures = server.stats() if server is not None else {"connections": 0}
            sessions = registry.sessions()
            figures.update({
                "sessions": len(sessions),
                "pipelines": sum(sum(1 for r in s.runners.values() if r.running) for s in sessions),
                "rss_kib": rss_bytes() // 1024,
            })
            if listener is not None:
                figures["wsman_connections"] = len(listener.connections)
                figures["wsman_shells"] = len(listener.service.shells)
                figures["wsman_disconnected"] = sum(1 for s in listener.service.shells.values() if s.disconnected)
                figures["wsman_cached_responses"] = len(listener.service.operations)
            return figures

        def log_sessions() -> None:
            log.info("stats %s", " ".join(f"{k}={v}" for k, v in stats().items()))
            if server is not None:
                server.log_sessions(header=False)
            if listener is not None:
                for shell in listener.service.shells.values():
                    log.info("  shell %s user=%s state=%s commands=%d buffered=%d mode=%s", shell.shell_id,
                             shell.owner, shell.state, len(shell.commands), shell.outbox.bytes, shell.buffer_mode)

        loop.add_signal_handler(signal.SIGUSR1, log_sessions)

        async def log_stats() -> None:
            last = None
            while True:
                await asyncio.sleep(STATS_INTERVAL_SECONDS)
                figures = stats()
                if figures != last:
                    log.info("stats %s", " ".join(f"{k}={v}" for k, v in figures.items()))
                    last = figures

        stats_task = loop.create_task(log_stats())
        await stopping.wait()
        log.info("stopping: %s", stats())
        stats_task.cancel()
    finally:
        if listener is not None:
            await listener.stop()
        if server is not None:
            await server.stop()
        if ntlm_dir is not None:
            shutil.rmtree(ntlm_dir, ignore_errors=True)
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
