"""The transport-agnostic PSRP session: one runspace pool, its pipelines, its variables. Bytes in, bytes out.

A front end (outofproc.py today; a WS-Management one later) moves bytes and calls, in MS-PSRP terms:

    receive(fragments)            client data for the pool or a pipeline (2.2.4 fragments of 2.2.1 messages)
    new_pipeline(id)              before the pipeline's CREATE_PIPELINE data arrives (OutOfProc <Command>,
                                  WSMan wxf:Command)
    stop_pipeline(id)             stop signal (OutOfProc <Signal>, WSMan wxf:Signal: MS-PSRP 3.1.5.3.9, 3.2.5.3.10)
    close_pipeline(id), close()   OutOfProc <Close>, WSMan wxf:Delete / 3.2.1.2.2
    next_payload()                what to send; the front end is told by Frontend.output_ready()

What happens when the client vanishes depends on the transport, so it is the front end's call:

    abandon()      OutOfProc/SSH: there is no disconnect; the pool dies with the connection. MS-PSRP
                   3.2.1.2.2: a server may move a pool to Broken when its connection is lost, stopping its
                   pipelines first.
    disconnect()   WSMan: the shell stays, disconnected, and its pipelines keep running; their output stays
    connect(fe)    queued here until a client connects again (3.1.4.9, 3.1.4.10, 3.2.5.3.17-3.2.5.3.19;
                   the robust-connection replay of MS-WSMV 3.1.4.1.39 is the WSMan front end's job). While
                   detached, output buffering follows OutputBufferingMode Block: pipelines pause once the
                   buffer is full. A front end with its own buffer (wsman/shell.py: Block and Drop) holds the
                   output itself instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing
import uuid

import psrpcore
from psrpcore.types import RunspacePoolState

from psrp_peer.fragments import Defragmenter, FragmentError
from psrp_peer.runner import PipelineRunner, Slots
from psrp_peer.script import SessionState

log = logging.getLogger(__name__)

DEFAULT_FRAGMENT_SIZE = 32 * 1024  # the fragment size pypsrp uses on OutOfProc transports
DETACHED_BUFFER_BYTES = 1024 * 1024  # Block mode: pipelines of a disconnected pool pause past this


class ProtocolError(Exception):
    """The client broke the protocol. The front end drops this session; nothing else is affected."""


class Frontend(typing.Protocol):
    """What the engine needs from a transport."""

    def output_ready(self, session: "Session") -> None:
        """Payloads are waiting in session.next_payload(); send them when the transport's rules allow."""

    async def wait_writable(self) -> None:
        """Backpressure: return when the transport can take more output."""


class Owner(typing.NamedTuple):
    """Who opened the session: for OutOfProc the ssh user, from SO_PEERCRED on the shim's socket."""

    user: str
    uid: int = -1
    pid: int = -1


class Registry:
    """Sessions of this peer process by runspace pool id (= WSMan ShellId), with their owners: what a
    Get-PSSession-style listing or a connect-by-id needs."""

    def __init__(self) -> None:
        self._sessions: typing.Dict[uuid.UUID, "Session"] = {}

    def add(self, session: "Session") -> None:
        self._sessions[session.pool_id] = session

    def remove(self, session: "Session") -> None:
        if self._sessions.get(session.pool_id) is session:
            del self._sessions[session.pool_id]

    def get(self, pool_id: uuid.UUID) -> typing.Optional["Session"]:
        return self._sessions.get(pool_id)

    def sessions(self, user: typing.Optional[str] = None) -> typing.List["Session"]:
        return [s for s in self._sessions.values() if user is None or s.owner.user == user]

    def __len__(self) -> int:
        return len(self._sessions)


class Session:
    def __init__(self, registry: Registry, owner: Owner, frontend: Frontend,
                 fragment_size: int = DEFAULT_FRAGMENT_SIZE) -> None:
        self.registry = registry
        self.owner = owner
        self.frontend = frontend
        self.fragment_size = fragment_size
        self.pool = psrpcore.ServerRunspacePool()
        self.variables = SessionState()
        self.slots = Slots(1)
        self.runners: typing.Dict[uuid.UUID, PipelineRunner] = {}
        self.created = time.time()
        self.ended = False
        self._defragmenter = Defragmenter()

    @property
    def pool_id(self) -> uuid.UUID:
        return self.pool.runspace_pool_id

    @property
    def state(self) -> RunspacePoolState:
        return self.pool.state

    def __repr__(self) -> str:
        return f"<Session {self.pool_id} {self.pool.state.name} owner={self.owner.user} pipelines={len(self.runners)}>"

    # ---- input ----------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Fragments from the client (for the pool or any of its pipelines; the message header says which).
        Synchronous: replies psrpcore queues are sent by the front end afterwards, in its own order, and any
        pipeline this starts runs only once the caller yields to the event loop."""
        try:
            messages = self._defragmenter.feed(data)
        except FragmentError as e:
            raise ProtocolError(f"bad fragments: {e}") from None
        for message in messages:
            if not message.known:
                # PowerShell ignores message types it does not know (psrp-rs, for one, sends its own).
                log.info("session %s: ignoring unknown PSRP message type %s", self.pool_id, message.type_name)
                continue
            try:
                self.pool.receive_data(psrpcore.PSRPPayload(message.as_single_fragment(),
                                                            psrpcore.StreamType.default, None))
                while True:
                    event = self.pool.next_event()
                    if event is None:
                        break
                    self._handle(event)
            except ProtocolError:
                raise
            except Exception as e:  # anything psrpcore (or CLIXML) rejects is the client's fault
                # (reprs can quote the whole message: keep log lines short)
                raise ProtocolError(f"bad {message.type_name} message: {repr(e)[:300]}") from None

    def _handle(self, event: psrpcore.PSRPEvent) -> None:
        pool = self.pool
        if isinstance(event, psrpcore.SessionCapabilityEvent):
            if pool.state == RunspacePoolState.Connecting:
                # MS-PSRP 3.1.4.10.3 / 3.1.5.3.15: a connecting client gets the server's SESSION_CAPABILITY.
                # psrpcore 0.3.1 only checks the pool id here and sends nothing, so the engine does.
                pool.prepare_message(pool.our_capability)
        elif isinstance(event, psrpcore.InitRunspacePoolEvent):
            self.slots.resize(event.max_runspaces or 1)
            self.registry.add(self)
            log.info("session %s opened by %s (uid %d, pid %d), max runspaces %d", self.pool_id,
                     self.owner.user, self.owner.uid, self.owner.pid, self.slots.size)
        elif isinstance(event, psrpcore.ConnectRunspacePoolEvent):
            log.info("session %s connected by %s", self.pool_id, self.owner.user)
        elif isinstance(event, psrpcore.CreatePipelineEvent):
            self._start(event.pipeline_id, event.pipeline)
        elif isinstance(event, psrpcore.GetCommandMetadataEvent):
            self._start(event.pipeline_id, None)
        elif isinstance(event, psrpcore.PipelineInputEvent):
            runner = self.runners.get(event.pipeline_id)
            if runner is not None:
                runner.add_input(event.data)
        elif isinstance(event, psrpcore.EndOfPipelineInputEvent):
            runner = self.runners.get(event.pipeline_id)
            if runner is not None:
                runner.end_input()
        elif isinstance(event, psrpcore.SetMaxRunspacesEvent):
            accepted = event.count >= max(1, pool.min_runspaces)
            pool.runspace_availability_response(event.ci, accepted)
            if accepted:
                self.slots.resize(event.count)
        elif isinstance(event, psrpcore.SetMinRunspacesEvent):
            pool.runspace_availability_response(event.ci, 1 <= event.count <= pool.max_runspaces)
        elif isinstance(event, psrpcore.ResetRunspaceStateEvent):
            # MS-PSRP 2.2.2.31 RESET_RUNSPACE_STATE: back to a fresh variable table.
            self.variables.clear()
            pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
            pool.runspace_availability_response(event.ci, self.slots.free)
        else:
            log.debug("session %s: no action for %s", self.pool_id, type(event).__name__)

    def _start(self, pipeline_id: uuid.UUID, metadata: typing.Optional[psrpcore.PowerShell]) -> None:
        if pipeline_id in self.runners:
            raise ProtocolError(f"pipeline {pipeline_id} created twice")
        runner = PipelineRunner(self, self.pool.pipeline_table[pipeline_id], metadata)
        self.runners[pipeline_id] = runner
        runner.start()

    # ---- pipelines ------------------------------------------------------------------------------------

    def has_pipeline(self, pipeline_id: uuid.UUID) -> bool:
        return pipeline_id in self.pool.pipeline_table

    def new_pipeline(self, pipeline_id: uuid.UUID) -> None:
        if pipeline_id in self.pool.pipeline_table:
            raise ProtocolError(f"pipeline {pipeline_id} already exists")
        psrpcore.ServerPipeline(self.pool, pipeline_id)  # registers itself in pool.pipeline_table

    async def stop_pipeline(self, pipeline_id: uuid.UUID) -> None:
        runner = self.runners.get(pipeline_id)
        if runner is not None:
            await runner.stop()

    async def close_pipeline(self, pipeline_id: uuid.UUID) -> None:
        runner = self.runners.pop(pipeline_id, None)
        if runner is not None:
            await runner.stop()  # closing a running pipeline stops it first, as PowerShell's Close does
        pipeline = self.pool.pipeline_table.get(pipeline_id)
        if pipeline is not None:
            pipeline.close()

    # ---- output ---------------------------------------------------------------------------------------

    def notify(self) -> None:
        self.frontend.output_ready(self)

    def next_payload(self) -> typing.Optional[psrpcore.PSRPPayload]:
        return self.pool.data_to_send(self.fragment_size)

    def buffered_bytes(self) -> int:
        # psrpcore keeps queued messages in a private list; only the detached (WSMan) buffer policy reads it.
        return sum(len(message) for message in self.pool._send_buffer)

    # ---- lifetime -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Client closed the pool: stop its pipelines, then Closed (MS-PSRP 3.2.1.2.2)."""
        await self._stop_all()
        # psrpcore refuses to close a pool that still has pipelines in its table.
        for pipeline in list(self.pool.pipeline_table.values()):
            try:
                pipeline.close()
            except psrpcore.InvalidPipelineState:  # did not stop within the grace period
                log.warning("session %s: pipeline %s still %s at close", self.pool_id, pipeline.pipeline_id,
                            pipeline.state.name)
                self.pool.pipeline_table.pop(pipeline.pipeline_id, None)
        if self.pool.state in (RunspacePoolState.Opened, RunspacePoolState.Closing):
            self.pool.close()  # queues RUNSPACEPOOL_STATE Closed
        self._end("closed by the client")

    async def abandon(self) -> None:
        """The client's connection is gone without a Close (OutOfProc/SSH): the runspace dies with it."""
        if self.ended:
            return
        await self._stop_all()
        self._end("abandoned: connection lost without Close, the runspace ends with it")

    def disconnect(self, holder: typing.Optional[Frontend] = None) -> None:
        """WSMan Disconnect: keep pool and running pipelines and buffer their output. By default the output
        stays queued in psrpcore (DetachedFrontend, Block mode); a front end that keeps its own buffer and
        buffering policy (the WSMan shell) passes itself as holder."""
        self.pool.disconnect()
        self.frontend = holder if holder is not None else DetachedFrontend(self)
        log.info("session %s disconnected", self.pool_id)

    def reconnect(self) -> None:
        """WSMan Reconnect: the same client resumes a disconnected pool (MS-PSRP 3.1.4.10, 3.2.5.3.19); no PSRP
        message is exchanged, the pool is simply Opened again."""
        self.pool.reconnect()
        log.info("session %s reconnected", self.pool_id)

    def connect(self, frontend: Frontend, owner: typing.Optional[Owner] = None) -> None:
        """WSMan Connect from a (possibly new) client: the client's SESSION_CAPABILITY and
        CONNECT_RUNSPACEPOOL follow through receive() (MS-PSRP 3.1.4.10.3)."""
        self.pool.connect()
        self._defragmenter = Defragmenter()  # the new client numbers its fragments from 1 again
        detached = self.frontend
        self.frontend = frontend
        if owner is not None:
            self.owner = owner
        if isinstance(detached, DetachedFrontend):
            detached.attached.set()

    async def _stop_all(self) -> None:
        await asyncio.gather(*(runner.stop() for runner in list(self.runners.values())))

    def _end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.runners.clear()
        self.registry.remove(self)
        if self.pool.state != RunspacePoolState.BeforeOpen:  # a connection's unused spare is not news
            log.info("session %s (%s) %s", self.pool_id, self.owner.user, why)


class DetachedFrontend:
    """Stands in for the transport while a (WSMan) pool is disconnected: output stays queued in psrpcore,
    and pipelines wait once DETACHED_BUFFER_BYTES are queued (OutputBufferingMode Block)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.attached = asyncio.Event()

    def output_ready(self, session: Session) -> None:
        pass

    async def wait_writable(self) -> None:
        if self.session.buffered_bytes() > DETACHED_BUFFER_BYTES:
            await self.attached.wait()
