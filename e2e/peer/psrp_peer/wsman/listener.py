"""The WS-Management listener: HTTP (or HTTPS) on a TCP port, path /wsman, serving the WinRS shells of the
PowerShell plugin (service.py) to authenticated users (auth.py), with message encryption (encryption.py) and
robust connection support (robust.py). One listener serves every shell of the process.

HTTP behaviour copied from Windows' WinRM service:
- no or wrong credentials: 401 with WWW-Authenticate challenges (Negotiate, and Basic where allowed);
- AllowUnencrypted=false (the default): over HTTP a body must be sealed by the Negotiate context. A plain SOAP
  body on such a connection is refused with HTTP 500 and no processing (pywinrm #129/#208 and winrm4j #151 show
  Windows' 500 for it), and Basic is not offered at all over HTTP;
- SOAP faults go out with HTTP 500, responses with 200, both sealed when the request was.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import ssl
import time
import typing
import xml.etree.ElementTree as ElementTree

from psrp_peer.engine import Registry
from psrp_peer.wsman import encryption, faults, http11
from psrp_peer.wsman.auth import ConnectionAuth, Users
from psrp_peer.wsman.faults import WSManFault
from psrp_peer.wsman.service import ACKNOWLEDGE, Caller, ServiceSettings, ShellService
from psrp_peer.wsman.soap import BadEnvelope, BadHeader, Request, header_element, parse_request, serialize

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # Windows' MaxEnvelopeSize is 500 KiB; encryption adds little
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
EXPIRY_INTERVAL_SECONDS = 0.5
CONNECTION_IDLE_SECONDS = 300.0  # a connection with no (complete) request for this long is closed


@dataclasses.dataclass
class ListenerSettings:
    host: str
    port: int
    users: Users
    allow_unencrypted: bool = False
    basic: bool = True  # Basic offered where the transport protects it (HTTPS, or AllowUnencrypted)
    tls: typing.Optional[ssl.SSLContext] = None
    service: ServiceSettings = dataclasses.field(default_factory=ServiceSettings)


class WSManListener:
    def __init__(self, settings: ListenerSettings, registry: Registry) -> None:
        self.settings = settings
        self.service = ShellService(registry, settings.service)
        self.connections: typing.Dict[int, asyncio.Task] = {}
        self._ids = itertools.count(1)
        self._server: typing.Optional[asyncio.AbstractServer] = None
        self._expiry: typing.Optional[asyncio.Task] = None
        self.port = settings.port
        self.scheme = "https" if settings.tls else "http"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.settings.host, self.settings.port,
                                                  limit=http11.MAX_HEADER_BYTES, ssl=self.settings.tls,
                                                  backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._expiry = asyncio.get_running_loop().create_task(self._expire_shells())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self.connections.values()):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections.values()), timeout=10)
        await self.service.close_all()

    async def _expire_shells(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)
            try:
                await self.service.expire()
            except Exception:  # a peer bug in a timer must not stop every later expiry
                log.exception("shell expiry failed")

    # ---- one TCP connection ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection_id = next(self._ids)
        self.connections[connection_id] = typing.cast(asyncio.Task, asyncio.current_task())
        peer = writer.get_extra_info("peername") or ("?", 0)
        auth = ConnectionAuth(self.settings.users, self.settings.basic and (
            self.settings.tls is not None or self.settings.allow_unencrypted))
        try:
            while True:
                try:
                    request = await asyncio.wait_for(http11.read_request(reader, MAX_BODY_BYTES),
                                                     CONNECTION_IDLE_SECONDS)
                except asyncio.TimeoutError:
                    log.info("conn %d from %s: idle for %.0fs, closed", connection_id, peer[0], CONNECTION_IDLE_SECONDS)
                    break
                except http11.HttpError as e:
                    log.info("conn %d from %s: %s", connection_id, peer[0], e)
                    writer.write(http11.response(e.status, body=str(e).encode(), keep_alive=False))
                    break
                if request is None:
                    break
                status, headers, body = await self._serve(request, auth, connection_id, peer[0], reader, writer)
                if writer.is_closing():
                    break
                keep_alive = request.keep_alive and status != 400
                writer.write(http11.response(status, headers, body, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; its shells stay (service.py decides their fate)
        except asyncio.CancelledError:
            pass  # shutdown
        except Exception:
            log.exception("conn %d from %s: peer bug; closing this connection", connection_id, peer[0])
        finally:
            self.connections.pop(connection_id, None)
            self.service.connection_closed(connection_id)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(self, request: http11.Request, auth: ConnectionAuth, connection_id: int, client_ip: str,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> typing.Tuple[int, typing.List[typing.Tuple[str, str]], bytes]:
        if request.target.split("?", 1)[0].rstrip("/").lower() != "/wsman":
            return 404, [], b""
        if request.method != "POST":
            return 405, [("Allow", "POST")], b""
        outcome = auth.check(request.header("authorization"))
        if outcome.user is None:
            return 401, outcome.headers, b""
        content_type = request.header("content-type") or ""
        body = request.body
        sealed = encryption.is_encrypted(content_type)
        if sealed:
            if not outcome.sealed:
                return 400, [], b"an encrypted body needs a Negotiate session"
            try:
                body, content_type = encryption.decrypt(body, content_type, outcome.context)
            except encryption.EncryptionError as e:
                log.info("conn %d: %s", connection_id, e)
                return 400, [], b""
        if not body:
            # The end of a Negotiate handshake that pypsrp sends without a body when it will encrypt.
            return 200, outcome.headers, b""
        if not sealed and self.settings.tls is None and not self.settings.allow_unencrypted:
            log.info("conn %d: unencrypted body from %s refused (AllowUnencrypted is false)", connection_id,
                     outcome.user)
            return 500, outcome.headers, b""
        caller = Caller(outcome.user, connection_id, client_ip,
                        f"{self.scheme}://{request.header('host') or 'localhost'}/wsman",
                        lambda: reader.at_eof() or writer.is_closing())
        status, envelope = await self._soap(body, caller)
        headers = list(outcome.headers)
        if sealed:
            data, response_type = encryption.encrypt(envelope, SOAP_CONTENT_TYPE, outcome.context)
            return status, headers + [("Content-Type", response_type)], data
        return status, headers + [("Content-Type", SOAP_CONTENT_TYPE)], envelope

    # ---- SOAP, with robust connection bookkeeping -----------------------------------------------------

    async def _soap(self, body: bytes, caller: Caller) -> typing.Tuple[int, bytes]:
        try:
            request = parse_request(body)
        except BadHeader as e:
            return 500, serialize(faults.invalid_header(str(e)).envelope(e.message_id))
        except BadEnvelope as e:
            return 500, serialize(faults.schema_error(str(e)).envelope(None))
        if request.action == ACKNOWLEDGE:
            return await self._run(request, caller, [])
        if not request.operation_id:
            return await self._run(request, caller, [])
        operations = self.service.operations
        row = operations.get(caller.user, request.operation_id)
        if request.operation_retransmit and row is not None:
            # MS-WSMV 3.1.4.1.39: a retransmission gets the kept response; the operation does not run again.
            row.connection = caller.connection
            await row.done.wait()
            row.used = time.monotonic()
            if row.response is None:
                return 500, serialize(faults.invalid_header("the operation produced no response").envelope(
                    request.message_id))
            log.info("robust: OperationID %s fetched again by %s", row.operation_id, caller.user)
            return row.response
        robust_headers = [header_element("wsmv:OperationID", request.operation_id, False),
                          header_element("wsmv:SequenceID", "1", False)]
        if row is not None:
            return 500, serialize(faults.invalid_header(
                f"The OperationID {request.operation_id[:80]} is already in use.").envelope(request.message_id))
        if request.sequence_id not in (None, 1):
            return 500, serialize(faults.invalid_header("The first SequenceID of an operation must be 1.").envelope(
                request.message_id))
        row = operations.start(caller.user, request.operation_id, caller.connection)
        # A robust operation goes on when its connection breaks (MS-WSMV 3.1.6.5, 3.1.6.6): what it produces is
        # kept in the table for the client's retransmission, so a Receive may take output with nobody listening.
        caller = dataclasses.replace(caller, gone=lambda: False)
        try:
            status, envelope = await self._run(request, caller, robust_headers)
        except BaseException:
            operations.abandon(row)
            raise
        operations.finish(row, status, envelope)
        return status, envelope

    async def _run(self, request: Request, caller: Caller, extra_headers: typing.List[ElementTree.Element]
                   ) -> typing.Tuple[int, bytes]:
        try:
            if request.action == ACKNOWLEDGE:
                root = self.service.acknowledge(request, caller)
            else:
                root = await self.service.handle(request, caller)
        except WSManFault as fault:
            if fault.subcode != "w:TimedOut":
                log.info("%s from %s: fault %s (%d): %s", request.action.rsplit("/", 1)[-1], caller.user,
                         fault.subcode, fault.wsman_code, fault.message[:200])
            return 500, serialize(fault.envelope(request.message_id, extra_headers))
        header = root.find("{http://www.w3.org/2003/05/soap-envelope}Header")
        for element in extra_headers:
            header.append(element)
        return 200, serialize(root)
