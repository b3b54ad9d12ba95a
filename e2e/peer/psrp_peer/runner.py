"""One PSRP pipeline: the interpreter run as a psrpcore ServerPipeline.

The pipeline states a client sees follow MS-PSRP 2.2.3.5 (PSInvocationState) and the PIPELINE_STATE message
(2.2.2.21): Running, then Completed; Failed with ExceptionAsErrorRecord for a terminating error; Stopped after
a stop signal (wxf:Signal, MS-PSRP 3.1.5.3.9/3.2.5.3.10, or the OutOfProc <Signal>). After a final state
nothing more is sent for the pipeline (3.2.1.3.2).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import typing
import uuid

import psrpcore
from psrpcore.types import ProgressRecordType, PSInvocationState

from psrp_peer import records
from psrp_peer.script import Interpreter, Invocation, ScriptError
from psrp_peer.script.cmdlets import ProgressRecord
from psrp_peer.script.errors import NotSupported, RuntimeFailure

if typing.TYPE_CHECKING:
    from psrp_peer.engine import Session

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0


class Slots:
    """The pool's MaxRunspaces: how many of its pipelines run at once. The others wait in arrival order, as
    PowerShell queues pipelines on a busy pool (the default pool has one runspace)."""

    def __init__(self, size: int = 1) -> None:
        self.size = max(1, size)
        self.used = 0
        self._waiters: typing.Deque[asyncio.Future] = collections.deque()

    @property
    def free(self) -> int:
        return max(0, self.size - self.used)

    async def acquire(self) -> None:
        if self.used < self.size and not self._waiters:
            self.used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake() counted us in before resolving the future
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.size = max(1, size)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


class PsrpStreams:
    """The interpreter's Streams on a psrpcore ServerPipeline. Each record is handed to the transport as soon
    as it is written, and the write waits while the transport is backed up."""

    def __init__(self, session: "Session", pipeline: psrpcore.ServerPipeline) -> None:
        self.session = session
        self.pipeline = pipeline

    async def output(self, value: typing.Any) -> None:
        self.pipeline.write_output(value)
        await self._sent()

    async def error(self, record: ScriptError) -> None:
        self.pipeline.write_error(
            records.net_exception(record),
            records.category_info(record),
            target_object=record.target,
            fully_qualified_error_id=record.error_id,
        )
        await self._sent()

    async def warning(self, message: str) -> None:
        self.pipeline.write_warning(message)
        await self._sent()

    async def verbose(self, message: str) -> None:
        self.pipeline.write_verbose(message)
        await self._sent()

    async def debug(self, message: str) -> None:
        self.pipeline.write_debug(message)
        await self._sent()

    async def information(self, message_data: typing.Any, tags: typing.List[str]) -> None:
        try:
            self.pipeline.write_information(message_data, source="Write-Information", tags=tags)
        except psrpcore.InvalidProtocolVersion:
            return  # clients before protocol 2.3 (PowerShell 5) have no information stream
        await self._sent()

    async def progress(self, record: ProgressRecord) -> None:
        self.pipeline.write_progress(
            activity=record.activity,
            activity_id=record.activity_id,
            status_description=record.status,
            current_operation=record.current_operation,
            parent_activity_id=record.parent_id,
            percent_complete=record.percent_complete,
            record_type=ProgressRecordType.Completed if record.completed else ProgressRecordType.Processing,
            seconds_remaining=record.seconds_remaining,
        )
        await self._sent()

    async def _sent(self) -> None:
        self.session.notify()
        await self.session.frontend.wait_writable()


class PipelineRunner:
    def __init__(self, session: "Session", pipeline: psrpcore.ServerPipeline,
                 metadata: typing.Optional[psrpcore.PowerShell]) -> None:
        self.session = session
        self.pipeline = pipeline
        self.metadata = metadata  # None for a GetCommandMetadata pipeline
        self.input_items: typing.List[typing.Any] = []
        self.input_complete = asyncio.Event()
        if metadata is None or metadata.no_input:
            self.input_complete.set()
        self.task: typing.Optional[asyncio.Task] = None

    @property
    def pipeline_id(self) -> uuid.UUID:
        return self.pipeline.pipeline_id

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"pipeline-{self.pipeline_id}")

    def add_input(self, item: typing.Any) -> None:
        self.input_items.append(item)

    def end_input(self) -> None:
        self.input_complete.set()

    async def stop(self) -> None:
        """Stop promptly, also mid Start-Sleep: cancellation reaches whatever the pipeline awaits."""
        if self.task is None or self.task.done():
            return
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=STOP_GRACE_SECONDS)

    async def _run(self) -> None:
        pipeline = self.pipeline
        try:
            await self.session.slots.acquire()
            try:
                pipeline.start()
                self.session.notify()
                statements = self._statements()
                # Input (MS-PSRP 2.2.2.17/2.2.2.18) is gathered until EndOfPipelineInput, then fed in.
                await self.input_complete.wait()
                interpreter = Interpreter(self.session.variables, PsrpStreams(self.session, pipeline))
                await interpreter.invoke(statements, None if self.metadata.no_input else self.input_items)
                pipeline.complete()
            finally:
                self.session.slots.release()
        except asyncio.CancelledError:
            self._mark_stopped()
        except ScriptError as error:
            self._fail(error)
        except Exception as error:  # a peer bug fails this pipeline, not the session or the process
            log.exception("pipeline %s failed inside the peer", self.pipeline_id)
            self._fail(RuntimeFailure(f"The PSRP test peer failed: {error!r}", error_id="PeerInternalError",
                                      category="NotSpecified"))
        finally:
            self.session.notify()

    def _statements(self) -> typing.List[typing.List[Invocation]]:
        """MS-PSRP 2.2.3.11 Pipeline: Cmds, with statements separated where IsEndOfStatement is set (psrpcore
        flattens PowerShell's ExtraCmds into that flag)."""
        if self.metadata is None:
            raise NotSupported("GetCommandMetadata pipelines (Get-Command over PSRP)")
        statements: typing.List[typing.List[Invocation]] = [[]]
        for command in self.metadata.commands:
            statements[-1].append(Invocation(str(command.command_text), bool(command.is_script),
                                             list(command.parameters)))
            if command.end_of_statement:
                statements.append([])
        return [s for s in statements if s]

    def _mark_stopped(self) -> None:
        state = self.pipeline.state
        if state == PSInvocationState.NotStarted:  # stopped while queued for a runspace
            self.pipeline.start()
            state = self.pipeline.state
        if state in (PSInvocationState.Running, PSInvocationState.Stopping):
            # Straight to Stopped (PipelineStoppedException, from psrpcore): no begin_stop(), whose Stopping
            # state message would end a pypsrp client's wait early, before the final state.
            self.pipeline.stop()

    def _fail(self, error: ScriptError) -> None:
        if self.pipeline.state == PSInvocationState.NotStarted:
            self.pipeline.start()
        if self.pipeline.state != PSInvocationState.Running:
            return
        # psrpcore 0.3.1 has complete() and stop() but no fail(); its _change_state sends PIPELINE_STATE with
        # ExceptionAsErrorRecord, which is exactly MS-PSRP 2.2.2.21 for a Failed pipeline.
        self.pipeline._change_state(PSInvocationState.Failed, records.error_record(error))
