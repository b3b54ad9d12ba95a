"""A bare out-of-process client for the tests pypsrp cannot express: sending broken packets, or vanishing
without a Close. psrpcore's client state machines make the PSRP messages; the framing is by hand."""

from __future__ import annotations

import asyncio
import base64
import typing
import uuid
import xml.etree.ElementTree as ElementTree

import psrpcore

EMPTY = uuid.UUID(int=0)


def data_line(data: bytes, guid: typing.Optional[uuid.UUID] = None) -> bytes:
    return b"<Data Stream='Default' PSGuid='%s'>%s</Data>\n" % (str(guid or EMPTY).encode(), base64.b64encode(data))


def guid_line(tag: str, guid: typing.Optional[uuid.UUID] = None) -> bytes:
    return b"<%s PSGuid='%s' />\n" % (tag.encode(), str(guid or EMPTY).encode())


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pool = psrpcore.ClientRunspacePool()
        self.events: typing.List[psrpcore.PSRPEvent] = []

    @classmethod
    async def connect(cls, socket_path: str) -> "RawClient":
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=16 * 1024 * 1024)
        return cls(reader, writer)

    async def send(self, line: bytes) -> None:
        self.writer.write(line)
        await self.writer.drain()

    async def packet(self, timeout: float = 10) -> typing.Optional[ElementTree.Element]:
        """Next packet from the peer (its Data fed to the client pool), or None at end of stream."""
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            return None
        element = ElementTree.fromstring(line)
        if element.tag == "Data" and element.text:
            self.pool.receive_data(psrpcore.PSRPPayload(base64.b64decode(element.text), psrpcore.StreamType.default,
                                                        None))
            while (event := self.pool.next_event()) is not None:
                self.events.append(event)
        return element

    async def until(self, tag: str, guid: typing.Optional[uuid.UUID] = None, timeout: float = 10) -> None:
        while True:
            element = await self.packet(timeout)
            if element is None:
                raise EOFError(f"stream ended before <{tag}>")
            if element.tag == tag and uuid.UUID(element.attrib["PSGuid"]) == (guid or EMPTY):
                return

    async def flush_pool(self, guid: typing.Optional[uuid.UUID] = None) -> None:
        while (payload := self.pool.data_to_send()) is not None:
            await self.send(data_line(payload.data, guid))
            await self.until("DataAck", guid)

    async def open(self) -> None:
        self.pool.open()
        await self.flush_pool()
        while self.pool.state != psrpcore.types.RunspacePoolState.Opened:
            await self.packet()

    async def start(self, script: str) -> psrpcore.ClientPowerShell:
        ps = psrpcore.ClientPowerShell(self.pool)
        ps.add_script(script)
        ps.start()
        await self.send(guid_line("Command", ps.pipeline_id))
        await self.until("CommandAck", ps.pipeline_id)
        await self.flush_pool(ps.pipeline_id)
        return ps

    async def run(self, script: str, timeout: float = 10) -> typing.List[typing.Any]:
        ps = await self.start(script)
        while ps.state == psrpcore.types.PSInvocationState.Running:
            await self.packet(timeout)
        await self.send(guid_line("Close", ps.pipeline_id))
        await self.until("CloseAck", ps.pipeline_id)
        return [e.data for e in self.events if isinstance(e, psrpcore.PipelineOutputEvent)
                and e.pipeline_id == ps.pipeline_id]

    async def closed_by_peer(self, timeout: float = 10) -> bool:
        """True once the peer has ended the connection (packets before that are read and dropped)."""
        try:
            while True:
                line = await asyncio.wait_for(self.reader.readline(), timeout)
                if not line:
                    return True
        except (ConnectionError, asyncio.IncompleteReadError):
            return True

    def abort(self) -> None:
        """Vanish without a Close, as a killed client or a cut connection does."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
