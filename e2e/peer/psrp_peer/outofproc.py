"""One client connection speaking the out-of-process framing (framing.py), as `pwsh -sshs` does on stdio.

Ordering rules learnt from PowerShell (OutOfProcServerMediator.cs) and its clients:
- pool data: the pool's replies go out BEFORE the <DataAck>; pipeline data: <DataAck> first, then the
  pipeline's output (pypsrp waits for the pool's replies by the time the ack arrives);
- <Signal> and <Close> are always acknowledged, also for a pipeline that is already gone;
- <Data> for a pipeline nobody created is acknowledged and dropped, as pwsh does;
- after the pool's <Close>/<CloseAck> the connection stays open, and new pool data starts a new session
  (pwsh does the same until its stdin closes);
- end of stream without a pool <Close> means the client vanished: there is no disconnect over this
  transport, so the session is abandoned (engine.Session.abandon).
Anything else the client gets wrong drops this connection's session only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing

from psrp_peer import framing
from psrp_peer.engine import Owner, ProtocolError, Registry, Session

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = 8 * 1024 * 1024  # a line; clients send 32 KiB fragments, i.e. ~44 KiB lines


class OutOfProcConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, registry: Registry,
                 owner: Owner, name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.registry = registry
        self.owner = owner
        self.name = name
        self.session = self._new_session()

    def _new_session(self) -> Session:
        return Session(self.registry, self.owner, self)

    # ---- Frontend (engine.Frontend) -------------------------------------------------------------------

    def output_ready(self, session: Session) -> None:
        if self.writer.is_closing():
            return  # the client is gone; the reader side will end the session
        while True:
            payload = session.next_payload()
            if payload is None:
                return
            self.writer.write(framing.data_packet(payload.data, payload.pipeline_id, payload.stream_type))

    async def wait_writable(self) -> None:
        if self.writer.is_closing():
            await asyncio.sleep(0)
            return
        try:
            await self.writer.drain()
        except ConnectionError:
            pass  # reported by the reader as end of stream

    # ---- serving --------------------------------------------------------------------------------------

    async def serve(self) -> None:
        log.info("%s: connected (user %s, uid %d, pid %d)", self.name, self.owner.user, self.owner.uid,
                 self.owner.pid)
        try:
            while True:
                try:
                    line = await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    if e.partial.strip():
                        log.info("%s: stream ended inside a packet", self.name)
                    break
                except asyncio.LimitOverrunError:
                    raise ProtocolError(f"packet longer than {MAX_PACKET_BYTES} bytes") from None
                except ConnectionError:
                    break
                if not line.strip():
                    continue
                await self._dispatch(framing.parse_packet(line))
        except (framing.FramingError, ProtocolError) as e:
            log.warning("%s: dropping session %s: %s", self.name, self.session.pool_id, e)
        except asyncio.CancelledError:
            log.info("%s: cancelled (peer shutting down)", self.name)
            raise
        except Exception:
            log.exception("%s: peer bug; dropping this session", self.name)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        # shield: the session's pipelines must be stopped even when the peer shuts down (cancellation).
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self.session.abandon())
        self.writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        log.info("%s: disconnected", self.name)

    def _send(self, tag: str, guid: typing.Any) -> None:
        if not self.writer.is_closing():
            self.writer.write(framing.guid_packet(tag, guid))

    async def _dispatch(self, packet: framing.Packet) -> None:
        session, guid = self.session, packet.guid
        if packet.tag == "Data":
            if guid is None:
                session.receive(packet.data)
                self.output_ready(session)  # pool replies first ...
                self._send("DataAck", None)  # ... then the ack
            elif session.has_pipeline(guid):
                session.receive(packet.data)  # a pipeline it creates starts only after this returns
                self._send("DataAck", guid)
                self.output_ready(session)
            else:
                log.info("%s: data for unknown pipeline %s acknowledged and dropped", self.name, guid)
                self._send("DataAck", guid)
        elif packet.tag == "Command":
            if guid is None:
                raise ProtocolError("<Command> for the runspace pool")
            session.new_pipeline(guid)
            self._send("CommandAck", guid)
        elif packet.tag == "Signal":
            if guid is None:
                raise ProtocolError("<Signal> for the runspace pool")  # pwsh: IPCNoSignalForSession
            await session.stop_pipeline(guid)
            self.output_ready(session)
            self._send("SignalAck", guid)
        elif packet.tag == "Close":
            if guid is not None:
                await session.close_pipeline(guid)
                self.output_ready(session)
                self._send("CloseAck", guid)
            else:
                await session.close()
                self.output_ready(session)
                self._send("CloseAck", None)
                self.session = self._new_session()
        else:  # DataAck, CommandAck, SignalAck, CloseAck: servers send these, clients do not
            raise ProtocolError(f"<{packet.tag}> from a client")
        await self.wait_writable()
