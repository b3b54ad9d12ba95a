"""The transport-agnostic engine driven by psrpcore's own client state machines, with no transport at all:
bytes from a psrpcore.ClientRunspacePool go into engine.Session.receive, the session's payloads go back.

This is where re-attaching a pool is proven (CONNECT_RUNSPACEPOOL, MS-PSRP 3.1.4.10.3): the OutOfProc
front end never needs it (that transport has no disconnect), a WS-Management front end will.
"""

from __future__ import annotations

import asyncio
import typing

import psrpcore
import pytest
from psrpcore.types import PSInvocationState, RunspacePoolState

from conftest import arun
from psrp_peer import engine
from psrp_peer.engine import Owner, ProtocolError, Registry, Session


class ClientWire:
    """A front end that hands every payload straight to a psrpcore client pool and keeps its events."""

    def __init__(self, client: psrpcore.ClientRunspacePool) -> None:
        self.client = client
        self.events: typing.List[psrpcore.PSRPEvent] = []

    def output_ready(self, session: Session) -> None:
        while (payload := session.next_payload()) is not None:
            self.client.receive_data(payload)
            while (event := self.client.next_event()) is not None:
                self.events.append(event)

    async def wait_writable(self) -> None:
        await asyncio.sleep(0)

    def send(self, session: Session) -> None:
        while (payload := self.client.data_to_send()) is not None:
            session.receive(payload.data)
        self.output_ready(session)

    def of_type(self, event_type: type) -> list:
        return [e for e in self.events if isinstance(e, event_type)]


class ByteSink:
    """A front end that only drains (a stand-in for a WSMan Receive), counting bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def output_ready(self, session: Session) -> None:
        while (payload := session.next_payload()) is not None:
            self.bytes += len(payload.data)

    async def wait_writable(self) -> None:
        await asyncio.sleep(0)


def open_session(registry: typing.Optional[Registry] = None) -> typing.Tuple[Session, ClientWire]:
    client = psrpcore.ClientRunspacePool()
    wire = ClientWire(client)
    session = Session(Registry() if registry is None else registry, Owner("tester", 1000, 42), wire)
    client.open()
    wire.send(session)
    assert client.state == RunspacePoolState.Opened
    return session, wire


async def until(predicate: typing.Callable[[], bool], timeout: float = 5) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


async def run(session: Session, wire: ClientWire, script: str, pipeline_id=None, **parameters) -> typing.Tuple[
        psrpcore.ClientPowerShell, list]:
    ps = psrpcore.ClientPowerShell(wire.client, pipeline_id=pipeline_id)
    ps.add_script(script)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    ps.start()
    session.new_pipeline(ps.pipeline_id)
    wire.send(session)
    await until(lambda: ps.state != PSInvocationState.Running)
    outputs = [e.data for e in wire.of_type(psrpcore.PipelineOutputEvent) if e.pipeline_id == ps.pipeline_id]
    return ps, outputs


def test_open_registers_session_with_owner():
    async def body():
        registry = Registry()
        session, wire = open_session(registry)
        assert registry.get(wire.client.runspace_pool_id) is session
        assert [s.owner.user for s in registry.sessions("tester")] == ["tester"]
        assert registry.sessions("someone-else") == []
        await session.close()
        wire.output_ready(session)  # the front end sends what close() queued
        assert len(registry) == 0
        assert wire.client.state == RunspacePoolState.Closed

    arun(body())


def test_pipeline_output_parameters_and_variables():
    async def body():
        session, wire = open_session()
        ps, out = await run(session, wire, "param($N) $x = $N; 1..$N | ForEach-Object { \"i$_\" }", N=3)
        assert ps.state == PSInvocationState.Completed and out == ["i1", "i2", "i3"]
        ps, out = await run(session, wire, "$x")
        assert out == [3]
        assert session.variables.snapshot() == {"x": 3}

    arun(body())


def test_failed_pipeline_carries_error_record():
    async def body():
        session, wire = open_session()
        ps, _ = await run(session, wire, "throw 'boom'")
        assert ps.state == PSInvocationState.Failed
        state = [e for e in wire.of_type(psrpcore.PipelineStateEvent) if e.pipeline_id == ps.pipeline_id][-1]
        assert str(state.reason) == "boom"
        assert state.reason.FullyQualifiedErrorId == "boom"
        # The client sees the .NET type chain, "Deserialized." prefixed as for any rehydrated object.
        assert state.reason.Exception.PSTypeNames[0] == "Deserialized.System.Management.Automation.RuntimeException"

    arun(body())


def test_reattach_pool_with_connect_runspacepool():
    """A second client connects to the disconnected pool by its id and finds the first client's state."""

    async def body():
        registry = Registry()
        session, first = open_session(registry)
        pool_id = first.client.runspace_pool_id
        await run(session, first, "$left = 'by the first client'")

        session.disconnect()  # what a WSMan front end does on wxf:Disconnect
        assert session.state == RunspacePoolState.Disconnected
        assert registry.get(pool_id) is session, "a disconnected pool stays findable by its id"

        second = psrpcore.ClientRunspacePool(runspace_pool_id=pool_id)
        second.connect()  # SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL
        wire = ClientWire(second)
        session.connect(wire, Owner("tester", 1000, 43))
        wire.send(session)

        assert second.state == RunspacePoolState.Opened
        # The server's SESSION_CAPABILITY (MS-PSRP 3.1.5.3.15), then RUNSPACEPOOL_INIT_DATA and
        # APPLICATION_PRIVATE_DATA; psrpcore alone would leave out the first.
        kinds = [type(e) for e in wire.events]
        assert kinds.index(psrpcore.SessionCapabilityEvent) < kinds.index(psrpcore.RunspacePoolInitDataEvent) \
            < kinds.index(psrpcore.ApplicationPrivateDataEvent)
        assert (second.min_runspaces, second.max_runspaces) == (1, 1)

        ps, out = await run(session, wire, "$left")
        assert out == ["by the first client"]
        await session.close()
        wire.output_ready(session)
        assert second.state == RunspacePoolState.Closed

    arun(body())


def test_connect_to_another_pool_id_is_a_protocol_error():
    async def body():
        session, first = open_session()
        session.disconnect()
        stranger = psrpcore.ClientRunspacePool()  # a different runspace pool id
        stranger.connect()
        session.connect(ClientWire(stranger))
        with pytest.raises(ProtocolError, match="different Runspace Pool"):
            ClientWire(stranger).send(session)

    arun(body())


def test_disconnected_pool_keeps_running_and_blocks_when_buffer_is_full(monkeypatch):
    """OutputBufferingMode Block: a disconnected pool's pipeline runs on, its output is kept, and it pauses
    once the buffer is full until a client attaches and drains."""
    monkeypatch.setattr(engine, "DETACHED_BUFFER_BYTES", 200_000)

    async def body():
        session, first = open_session()
        ps = psrpcore.ClientPowerShell(first.client)
        ps.add_script("Start-Sleep -Milliseconds 20; 1..100 | ForEach-Object { 'x' * 10000 }")
        ps.start()
        session.new_pipeline(ps.pipeline_id)
        first.send(session)
        session.disconnect()

        runner = session.runners[ps.pipeline_id]
        await until(lambda: session.buffered_bytes() > 200_000)
        await asyncio.sleep(0.1)
        paused_at = session.buffered_bytes()
        assert runner.running, "Block mode pauses the pipeline, it does not end it"
        assert paused_at < 400_000, "the pipeline must stop producing once the buffer is full"

        sink = ByteSink()
        session.connect(sink)
        sink.output_ready(session)  # a Receive drains what was buffered ...
        await until(lambda: not runner.running)  # ... and the pipeline runs to its end
        sink.output_ready(session)
        assert runner.pipeline.state == PSInvocationState.Completed
        assert sink.bytes > 100 * 10000

    arun(body())


def test_unknown_message_types_are_ignored():
    async def body():
        session, wire = open_session()
        pool_id = wire.client.runspace_pool_id
        bogus = (2).to_bytes(4, "little") + (0x00099999).to_bytes(4, "little") + pool_id.bytes_le + bytes(16) + b"<x/>"
        session.receive((77).to_bytes(8, "big") + bytes(8) + b"\x03" + len(bogus).to_bytes(4, "big") + bogus)
        ps, out = await run(session, wire, "'still here'")
        assert out == ["still here"]

    arun(body())


@pytest.mark.parametrize("data", [
    b"\x00" * 5,  # truncated fragment
    (1).to_bytes(8, "big") + bytes(8) + b"\x03" + (45).to_bytes(4, "big") + b"\x02\x00\x00\x00"
    + (0x00021006).to_bytes(4, "little") + bytes(32) + b"<Obj",  # CreatePipeline with broken CLIXML
])
def test_malformed_input_is_a_protocol_error(data):
    async def body():
        session, wire = open_session()
        with pytest.raises(ProtocolError):
            session.receive(data)

    arun(body())


def test_pool_limits_concurrency_and_answers_runspace_requests():
    async def body():
        session, wire = open_session()
        client = wire.client
        first = psrpcore.ClientPowerShell(client)
        first.add_script("Start-Sleep -Seconds 30")
        first.start()
        session.new_pipeline(first.pipeline_id)
        wire.send(session)
        second = psrpcore.ClientPowerShell(client)
        second.add_script("'second'")
        second.start()
        session.new_pipeline(second.pipeline_id)
        wire.send(session)
        await asyncio.sleep(0.1)
        assert session.pool.pipeline_table[second.pipeline_id].state == PSInvocationState.NotStarted, \
            "with MaxRunspaces 1 the second pipeline queues"

        client.get_available_runspaces()
        client.set_max_runspaces(2)
        wire.send(session)
        availability = wire.of_type(psrpcore.GetRunspaceAvailabilityEvent)
        assert availability and availability[-1].count == 0
        assert client.max_runspaces == 2
        await until(lambda: second.state == PSInvocationState.Completed)

        await session.stop_pipeline(first.pipeline_id)
        wire.output_ready(session)
        assert first.state == PSInvocationState.Stopped

        client.reset_runspace_state()
        await run(session, wire, "$v = 1")
        client.reset_runspace_state()
        wire.send(session)
        assert session.variables.snapshot() == {}

    arun(body())


def test_abandon_stops_pipelines_and_unregisters():
    async def body():
        registry = Registry()
        session, wire = open_session(registry)
        ps = psrpcore.ClientPowerShell(wire.client)
        ps.add_script("Start-Sleep -Seconds 60")
        ps.start()
        session.new_pipeline(ps.pipeline_id)
        wire.send(session)
        await asyncio.sleep(0.05)
        runner = session.runners[ps.pipeline_id]
        await asyncio.wait_for(session.abandon(), 2)
        assert not runner.running
        assert len(registry) == 0 and session.ended

    arun(body())
