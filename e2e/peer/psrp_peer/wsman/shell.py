"""One WinRS shell of the PowerShell plugin: an engine Session (the runspace pool) plus what WS-Management adds
around it: the commands (pipelines) by CommandId, the outbox the client's Receives drain, the connection state
(Connected/Disconnected, MS-WSMV 2.2.5.15), OutputBufferingMode and the idle timeout.

Life of a shell whose client vanishes (TCP gone, no Delete or Disconnect), as a Windows host handles it:
MS-WSMV 3.1.6.5 says the server treats such a shell as idle, not disconnected, so the shell and its running
commands stay; their output is buffered (Block or Drop, outbox.py). Once the client's TCP connections are all
closed and nothing has come for the auto-disconnect time, the shell becomes Disconnected (what PowerShell's robust connections do after a network
outage, MS-WSMV 3.1.5.6 Connection AutoDisconnect Timer), so any client of the user can Connect to it and take
the buffered output (Receive-PSSession). When the idle timeout passes without a client, the shell is deleted
(MS-WSMV 3.1.5.3 Shell Idle Timeout Timer) and its pipelines are stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import typing
import uuid

from psrpcore.types import PSInvocationState

from psrp_peer.engine import Owner, Registry, Session
from psrp_peer.wsman.outbox import Outbox, Target

log = logging.getLogger(__name__)

FINAL_STATES = (PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped)
WHOLE_MESSAGES = 1 << 30  # engine fragment size: every message comes out as a single fragment


@dataclasses.dataclass
class ShellSettings:
    buffer_bytes: int = 1024 * 1024  # output held per shell before Block waits or Drop discards
    buffer_mode: str = "Block"  # the session configuration's OutputBufferingMode
    idle_timeout: float = 7200.0  # Windows' default shell IdleTimeout (2 h)
    auto_disconnect: float = 180.0  # a shell without a client for this long becomes Disconnected


class WSManShell:
    def __init__(self, registry: Registry, owner: Owner, resource_uri: str, settings: ShellSettings,
                 client_ip: str, idle_timeout: typing.Optional[float], session_id: typing.Optional[str]) -> None:
        self.session = Session(registry, owner, self, fragment_size=WHOLE_MESSAGES)
        self.resource_uri = resource_uri
        self.settings = settings
        self.client_ip = client_ip
        self.idle_timeout = idle_timeout if idle_timeout is not None else settings.idle_timeout
        self.buffer_mode = settings.buffer_mode
        self.session_id = session_id  # wsmv:SessionId of the client that created or last connected it
        self.outbox = Outbox()
        # CommandId -> "open"; "done" once a Receive handed out its CommandState Done (the client has the whole
        # pipeline, so a new client is not offered it again); "closed" after Signal Terminate.
        self.commands: typing.Dict[uuid.UUID, str] = {}
        self.disconnected = False
        self.deleted = False
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.receivers = 0  # Receive requests waiting on this shell right now
        # TCP connections (listener ids) that carried requests for this shell and are still open: while one is,
        # the client is there, however quiet. The auto-disconnect clock runs only once they are all gone.
        self.connections: typing.Set[int] = set()
        self._changed = asyncio.Event()  # output arrived, or state changed: wake waiting Receives
        self._drained = asyncio.Event()  # a Receive took output: wake pipelines blocked on a full buffer

    # ---- identity -------------------------------------------------------------------------------------

    @property
    def shell_id(self) -> uuid.UUID:
        return self.session.pool_id

    @property
    def owner(self) -> str:
        return self.session.owner.user

    @property
    def state(self) -> str:
        return "Disconnected" if self.disconnected else "Connected"

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def attach(self, connection: int) -> None:
        self.connections.add(connection)
        self.touch()

    def detach(self, connection: int) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.touch()  # the client was there until now

    # ---- engine.Frontend ------------------------------------------------------------------------------

    def output_ready(self, session: Session) -> None:
        while True:
            payload = session.next_payload()
            if payload is None:
                break
            target = payload.pipeline_id
            if target is not None and self.commands.get(target) == "closed":
                continue  # output of a terminated command nobody will receive
            self.outbox.add(target, payload.data)
        if self.disconnected and self.buffer_mode == "Drop" and self.outbox.bytes > self.settings.buffer_bytes:
            before = self.outbox.dropped
            self.outbox.drop_oldest(self.settings.buffer_bytes)
            log.debug("shell %s: Drop mode discarded %d messages", self.shell_id, self.outbox.dropped - before)
        self._wake()

    async def wait_writable(self) -> None:
        while self.outbox.pipeline_bytes() > self.settings.buffer_bytes and not self.deleted:
            if self.disconnected and self.buffer_mode == "Drop":
                return
            self._drained.clear()
            await self._drained.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- what Receive needs ---------------------------------------------------------------------------

    def command_done(self, command_id: uuid.UUID) -> bool:
        """Done once the pipeline reached a final state and all its output has been taken (or it was closed)."""
        if self.commands.get(command_id) == "closed":
            return not self.outbox.has(command_id)
        pipeline = self.session.pool.pipeline_table.get(command_id)
        runner = self.session.runners.get(command_id)
        finished = pipeline is None or (pipeline.state in FINAL_STATES and (runner is None or not runner.running))
        return finished and not self.outbox.has(command_id)

    def mark_done_delivered(self, command_id: uuid.UUID) -> None:
        if self.commands.get(command_id) == "open":
            self.commands[command_id] = "done"

    def pending_commands(self) -> typing.List[uuid.UUID]:
        """Commands a (new) client can still connect to: Get-PSSession's view of the shell's pipelines."""
        return [command_id for command_id, state in self.commands.items() if state == "open"]

    def take(self, target: Target, budget: int) -> typing.List[bytes]:
        fragments = self.outbox.take(target, budget)
        if fragments:
            self._drained.set()
        return fragments

    def changed(self) -> asyncio.Event:
        return self._changed

    # ---- operations -----------------------------------------------------------------------------------

    def new_command(self, command_id: uuid.UUID) -> None:
        self.session.new_pipeline(command_id)
        self.commands[command_id] = "open"

    async def terminate_command(self, command_id: uuid.UUID) -> None:
        self.commands[command_id] = "closed"
        await self.session.close_pipeline(command_id)
        self.outbox.discard(command_id)
        self._drained.set()
        self._wake()

    def disconnect(self, buffer_mode: typing.Optional[str], idle_timeout: typing.Optional[float], why: str) -> None:
        if buffer_mode:
            self.buffer_mode = buffer_mode
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
        self.session.disconnect(holder=self)
        self.disconnected = True
        self.touch()
        log.info("shell %s (%s) disconnected (%s): BufferMode %s, IdleTimeout %.0fs", self.shell_id, self.owner, why,
                 self.buffer_mode, self.idle_timeout)
        self.output_ready(self.session)  # apply Drop at once if the buffer is already over
        self._drained.set()

    def reconnect(self) -> None:
        self.session.reconnect()
        self.disconnected = False
        self.touch()
        self._wake()

    def connect_new_client(self, owner: Owner, session_id: typing.Optional[str]) -> None:
        """A client without HLP state takes the shell over (MS-PSRP 3.1.4.10.3): pool-level output queued for
        the old client means nothing to the new one; pipeline output stays for it to Receive."""
        self.outbox.discard(None)
        self.outbox.restart_partial()
        self.session.connect(self, owner)
        self.disconnected = False
        self.session_id = session_id
        self.touch()

    async def delete(self, why: str) -> None:
        if self.deleted:
            return
        self.deleted = True
        self._drained.set()
        await self.session.close()
        self.outbox = Outbox()
        self._wake()
        log.info("shell %s (%s) deleted: %s", self.shell_id, self.owner, why)

    # ---- timers ---------------------------------------------------------------------------------------

    def expiry_action(self, now: float) -> typing.Optional[str]:
        """'disconnect' or 'delete' when a timer of this shell has run out (checked by the listener)."""
        if self.deleted or self.receivers:
            return None
        idle = now - self.last_activity
        if idle >= self.idle_timeout:
            return "delete"
        if not self.disconnected and not self.connections and idle >= self.settings.auto_disconnect:
            return "disconnect"
        return None
