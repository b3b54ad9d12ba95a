"""The peer's Unix socket: every accepted connection is one out-of-process PSRP session.

sshd runs the pwsh-shim as the logged-in user for the `powershell` subsystem; the shim's socat connects
here. The socket is mode 0666 so any user's shim can connect, and the peer learns the user from the
kernel (SO_PEERCRED) instead of from anything in the byte stream, which stays pure PSRP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import pwd
import socket
import stat
import struct
import typing

from psrp_peer.engine import Owner, Registry
from psrp_peer.outofproc import MAX_PACKET_BYTES, OutOfProcConnection

log = logging.getLogger(__name__)


def peer_owner(sock: typing.Any) -> Owner:
    """The connecting process's user via SO_PEERCRED (struct ucred: pid, uid, gid)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
    except (OSError, AttributeError, struct.error):
        return Owner("unknown")
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Owner(user, uid, pid)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeerServer:
    def __init__(self, socket_path: str, registry: typing.Optional[Registry] = None) -> None:
        self.socket_path = socket_path
        self.registry = registry if registry is not None else Registry()
        self.connections: typing.Dict[OutOfProcConnection, asyncio.Task] = {}
        self._server: typing.Optional[asyncio.AbstractServer] = None
        self._counter = itertools.count(1)

    async def start(self) -> None:
        self._clear_stale_socket()
        self._server = await asyncio.start_unix_server(
            self._accept, path=self.socket_path, limit=MAX_PACKET_BYTES, backlog=1024)
        os.chmod(self.socket_path, 0o666)

    def _clear_stale_socket(self) -> None:
        try:
            mode = os.lstat(self.socket_path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise SystemExit(f"{self.socket_path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
            os.unlink(self.socket_path)  # left behind by a peer that died
        else:
            raise SystemExit(f"another peer already serves {self.socket_path}")
        finally:
            probe.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = OutOfProcConnection(reader, writer, self.registry, peer_owner(writer.get_extra_info("socket")),
                                         f"conn-{next(self._counter)}")
        self.connections[connection] = typing.cast(asyncio.Task, asyncio.current_task())
        try:
            await connection.serve()
        except asyncio.CancelledError:
            # Shutdown; the connection has cleaned up. Not re-raised: asyncio's stream protocol asks this
            # task for its exception() when it ends, which raises for a cancelled task (logged as an error).
            pass
        finally:
            self.connections.pop(connection, None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self.connections.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def stats(self) -> typing.Dict[str, int]:
        sessions = self.registry.sessions()
        return {
            "connections": len(self.connections),
            "sessions": len(sessions),
            "pipelines": sum(sum(1 for r in s.runners.values() if r.running) for s in sessions),
            "rss_kib": rss_bytes() // 1024,
        }

    def log_sessions(self, header: bool = True) -> None:
        """A Get-PSSession-like listing in the log (SIGUSR1)."""
        if header:
            log.info("stats %s", " ".join(f"{k}={v}" for k, v in self.stats().items()))
        for session in self.registry.sessions():
            running = sum(1 for r in session.runners.values() if r.running)
            log.info("  session %s user=%s state=%s pipelines=%d running=%d variables=%d", session.pool_id,
                     session.owner.user, session.state.name, len(session.runners), running,
                     len(session.variables.snapshot()))
