"""The WinRS operations of the PowerShell plugin: MS-WSMV 3.1.4.x for the WS-Management side, MS-PSRP 3.1.5.3 and
3.2.5.3 (the wxf:* message rules) for what a PowerShell shell carries in them. One ShellService per listener;
every shell of every user lives in it.

    Create       rsp:Shell + pwsh:creationXml (SESSION_CAPABILITY, INIT_RUNSPACEPOOL)   MS-WSMV 3.1.4.5.2, PSRP 3.1.5.3.1
                 beyond MaxShellsPerUser: w:QuotaLimit                                  MS-WSMV 3.1.4.5.2.1, 2.2.4.42
    Command      rsp:CommandLine, CREATE_PIPELINE in rsp:Arguments                      MS-WSMV 3.1.4.11, PSRP 3.1.5.3.3/4
    Send         rsp:Stream Name="stdin"|"pr", to the pool or a CommandId               MS-WSMV 3.1.4.13, PSRP 3.1.5.3.5
    Receive      DesiredStream stdout; w:TimedOut after OperationTimeout                MS-WSMV 3.1.4.14, PSRP 3.1.5.3.7,
                                                                                        3.2.5.3.7/8
    Signal       powershell/signal/crtl_c stops, .../signal/Terminate closes a command  MS-WSMV 3.1.4.12, PSRP 3.2.5.3.10
    Get          the shell's properties (rsp:Shell)                                     MS-WSMV 3.1.4.2.1
    Delete       the shell, stopping its pipelines                                      MS-WSMV 3.1.4.4.1
    Disconnect   rsp:BufferMode Block|Drop, rsp:IdleTimeOut (refused under 60 s)        MS-WSMV 3.1.4.15, PSRP 3.1.5.3.16
    Reconnect    the same client resumes                                                MS-WSMV 3.1.4.16, PSRP 3.2.5.3.19
    Connect      a new client: connectXml -> connectResponseXml (SESSION_CAPABILITY);  MS-WSMV 3.1.4.17,
                 then rsp:Connect CommandId=... per pipeline, and Receive               PSRP 3.1.5.3.14/15, 3.1.4.10.3
    Enumerate    the user's shells (rsp:Shell), and the commands of one shell           MS-WSMV 3.1.4.8.2
    Acknowledge  kept robust-connection responses up to a SequenceID                    MS-WSMV 3.1.4.18 (robust.py)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import os
import time
import typing
import uuid
import xml.etree.ElementTree as ElementTree

from psrpcore.types import PSRPMessageType

from psrp_peer.engine import Owner, ProtocolError, Registry
from psrp_peer.fragments import FRAGMENT_HEADER, MESSAGE_HEADER_BYTES
from psrp_peer.server import rss_bytes
from psrp_peer.wsman import faults
from psrp_peer.wsman.faults import WSManFault
from psrp_peer.wsman.robust import OperationTable
from psrp_peer.wsman.shell import ShellSettings, WSManShell
from psrp_peer.wsman.soap import NS, BadEnvelope, Request, envelope, format_duration, header_element, parse_duration, q

log = logging.getLogger(__name__)

SHELL_ACTION = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/"
ACKNOWLEDGE = "http://schemas.microsoft.com/wbem/wsman/1/wsman/Acknowledge"
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
SHELL_ENUM_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
COMMAND_ENUM_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
COMMAND_STATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/"
MIN_DISCONNECT_IDLE_SECONDS = 60  # Windows refuses a shorter IdleTimeOut on Disconnect
DEFAULT_OPERATION_TIMEOUT = 60.0
DEFAULT_CONFIGURATIONS = ("Microsoft.PowerShell", "Microsoft.PowerShell32", "Microsoft.PowerShell.Workflow",
                          "PowerShell.7")
ENVELOPE_OVERHEAD = 4096  # room for the SOAP around the streams of a ReceiveResponse


@dataclasses.dataclass
class Caller:
    user: str
    connection: int  # id of the TCP connection, for robust connection bookkeeping
    client_ip: str
    endpoint: str  # http(s)://host:port/wsman as the client addressed us
    gone: typing.Callable[[], bool]  # the client's TCP connection has closed


@dataclasses.dataclass
class ServiceSettings:
    max_shells_per_user: int = 30  # Windows' MaxShellsPerUser default (MS-WSMV 2.2.4.42)
    configurations: typing.Tuple[str, ...] = DEFAULT_CONFIGURATIONS
    shell: ShellSettings = dataclasses.field(default_factory=ShellSettings)
    robust_retention: float = 180.0


class ShellService:
    def __init__(self, registry: Registry, settings: ServiceSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.shells: typing.Dict[uuid.UUID, WSManShell] = {}
        self.operations = OperationTable(settings.robust_retention)
        self._configurations = {name.lower(): name for name in settings.configurations}

    # ---- dispatch -------------------------------------------------------------------------------------

    async def handle(self, request: Request, caller: Caller) -> ElementTree.Element:
        """-> the response envelope (a fault raises WSManFault). Robust connection bookkeeping wraps this."""
        action = request.action
        if action == ENUMERATION + "Enumerate":
            return self.enumerate(request, caller)
        if action == TRANSFER + "Create":
            try:
                return await self.create(request, caller)
            except BadEnvelope as e:
                raise faults.schema_error(str(e)) from None
        handlers = {
            TRANSFER + "Get": self.get,
            TRANSFER + "Delete": self.delete,
            SHELL_ACTION + "Command": self.command,
            SHELL_ACTION + "Send": self.send,
            SHELL_ACTION + "Receive": self.receive,
            SHELL_ACTION + "Signal": self.signal,
            SHELL_ACTION + "Disconnect": self.disconnect,
            SHELL_ACTION + "Reconnect": self.reconnect,
            SHELL_ACTION + "Connect": self.connect,
        }
        handler = handlers.get(action)
        if handler is None:
            raise faults.action_not_supported(action)
        shell = self._shell(request, caller)
        shell.attach(caller.connection)
        try:
            return await handler(request, caller, shell)
        except BadEnvelope as e:  # e.g. an IdleTimeOut in the body that is no xs:duration
            raise faults.schema_error(str(e)) from None
        except ProtocolError as e:
            # The client's PSRP data broke the protocol: MS-PSRP 3.2.5.1 (3) has the server fault pending Receives
            # and close the pool; that shell is done for, nothing else is touched.
            log.warning("shell %s: %s; deleting it", shell.shell_id, e)
            await self._remove(shell, f"protocol error: {e}")
            raise faults.internal_error(f"The PowerShell plugin rejected the client's data: {e}") from None

    def _shell(self, request: Request, caller: Caller) -> WSManShell:
        raw = request.selectors.get("ShellId", "")
        try:
            shell_id = uuid.UUID(raw)
        except ValueError:
            raise faults.shell_not_found() from None
        shell = self.shells.get(shell_id)
        if shell is None or shell.deleted:
            raise faults.shell_not_found()
        if shell.owner != caller.user:
            raise faults.access_denied()
        return shell

    def _response(self, request: Request, action: str, body: typing.Optional[ElementTree.Element] = None
                  ) -> ElementTree.Element:
        return envelope(action, request.message_id, body)

    # ---- Create ---------------------------------------------------------------------------------------

    async def create(self, request: Request, caller: Caller) -> ElementTree.Element:
        configuration = self._configuration(request.resource_uri)
        shell_element = request.body.find("rsp:Shell", NS)
        if shell_element is None:
            raise faults.schema_error("Create needs an rsp:Shell body")
        creation = shell_element.find("pwsh:creationXml", NS)
        if creation is None or not (creation.text or "").strip():
            raise faults.schema_error("a PowerShell shell needs creationXml")
        data = _b64(creation.text)
        mine = [s for s in self.shells.values() if s.owner == caller.user and not s.deleted]
        if len(mine) >= self.settings.max_shells_per_user:
            raise faults.quota_max_shells(self.settings.max_shells_per_user)
        idle = parse_duration(_text(shell_element.find("rsp:IdleTimeOut", NS)))
        shell = WSManShell(self.registry, Owner(caller.user), PS_RESOURCE_PREFIX + configuration,
                           self.settings.shell, caller.client_ip, idle, request.session_id)
        try:
            shell.session.receive(data)  # SESSION_CAPABILITY + INIT_RUNSPACEPOOL: the pool id is the ShellId
        except ProtocolError as e:
            await self._discard_new(shell)
            raise faults.schema_error(f"creationXml: {e}") from None
        shell_id = shell.shell_id
        wanted = shell_element.attrib.get("ShellId")
        if wanted and _uuid(wanted) != shell_id:
            await self._discard_new(shell)
            raise faults.schema_error("the ShellId attribute differs from the runspace pool id in creationXml")
        if shell_id in self.shells:
            await self._discard_new(shell)
            raise faults.internal_error(f"a shell with id {str(shell_id).upper()} already exists")
        self.shells[shell_id] = shell
        shell.attach(caller.connection)
        shell.output_ready(shell.session)
        log.info("shell %s created by %s from %s (%s)", shell_id, caller.user, caller.client_ip, configuration)
        body = ElementTree.Element(q("wst:ResourceCreated"))
        ElementTree.SubElement(body, q("wsa:Address")).text = caller.endpoint
        parameters = ElementTree.SubElement(body, q("wsa:ReferenceParameters"))
        ElementTree.SubElement(parameters, q("wsman:ResourceURI")).text = shell.resource_uri
        selectors = ElementTree.SubElement(parameters, q("wsman:SelectorSet"))
        ElementTree.SubElement(selectors, q("wsman:Selector"), {"Name": "ShellId"}).text = str(shell_id).upper()
        root = self._response(request, TRANSFER + "CreateResponse", body)
        root.find("s:Body", NS).append(self._shell_element(shell))
        return root

    async def _discard_new(self, shell: WSManShell) -> None:
        """Drop a shell whose Create failed. Its pool may already have registered itself under an id another
        shell owns (a repeated ShellId): that shell goes back into the registry."""
        await shell.session.abandon()
        existing = self.shells.get(shell.shell_id)
        if existing is not None:
            self.registry.add(existing.session)

    def _configuration(self, resource_uri: str) -> str:
        name = resource_uri[len(PS_RESOURCE_PREFIX):] if resource_uri.startswith(PS_RESOURCE_PREFIX) else ""
        configuration = self._configurations.get(name.lower())
        if configuration is None:
            raise WSManFault("s:Sender", "w:InvalidResourceURI", 2150858770,
                             f"The WS-Management service cannot process the request. Cannot find the {name[:100]} "
                             f"session configuration in the WSMan: drive on the {faults.MACHINE} computer.")
        return configuration

    def _shell_element(self, shell: WSManShell, enumerated: bool = False) -> ElementTree.Element:
        """rsp:Shell as Windows lists it (MS-WSMV 2.2.4.37, 3.1.4.2.1; the fields and their order are those of the
        CreateResponse and EnumerateResponse in pypsrp's recorded exchanges)."""
        element = ElementTree.Element(q("rsp:Shell"))
        now = time.time()
        idle_for = max(0.0, time.monotonic() - shell.last_activity)
        fields = [
            ("ShellId", str(shell.shell_id).upper()),
            ("ResourceUri", shell.resource_uri),
            ("Owner", f"{faults.MACHINE}\\{shell.owner}"),
            ("ClientIP", shell.client_ip),
            ("ProcessId", str(os.getpid())),
            ("IdleTimeOut", format_duration(shell.idle_timeout)),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
            ("MaxIdleTimeOut", format_duration(2147483.647)),
            ("Locale", "en-US"),
            ("DataLocale", "en-US"),
            ("CompressionMode", "NoCompression"),
            ("ProfileLoaded", "Yes"),
            ("Encoding", "UTF8"),
            ("BufferMode", shell.buffer_mode),
            ("State", shell.state),
            ("ShellRunTime", _day_duration(now - shell.created)),
            ("ShellInactivity", _day_duration(idle_for)),
        ]
        if enumerated:
            fields += [("MemoryUsed", f"{rss_bytes() // (1024 * 1024)}MB"), ("ChildProcesses", "0")]
        for name, value in fields:
            ElementTree.SubElement(element, q(f"rsp:{name}")).text = value
        return element

    async def get(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        """wst:Get of a shell (MS-WSMV 3.1.4.2.1): its properties, as Windows answers it (pypsrp's is_alive
        recordings: the same rsp:Shell as in an enumeration)."""
        body = self._shell_element(shell, enumerated=True)
        return self._response(request, TRANSFER + "GetResponse", body)

    # ---- Command, Send, Signal ------------------------------------------------------------------------

    async def command(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        _require_connected(shell)
        line = request.body.find("rsp:CommandLine", NS)
        if line is None:
            raise faults.schema_error("Command needs rsp:CommandLine")
        data = b"".join(_b64(a.text) for a in line.findall("rsp:Arguments", NS))
        # The client names the command by its pipeline id (pypsrp and PowerShell set CommandId to it; MS-PSRP
        # 3.1.5.3.3/3.1.5.3.4); without the attribute, the id in the CREATE_PIPELINE message header is used.
        in_message = _pipeline_id_of(data)
        command_id = _uuid(line.attrib["CommandId"]) if "CommandId" in line.attrib else in_message
        if command_id is None or (in_message is not None and in_message != command_id):
            raise faults.schema_error("the CommandId and the pipeline id of CREATE_PIPELINE differ or are missing")
        if command_id in shell.commands:
            raise faults.internal_error(f"command {str(command_id).upper()} already exists")
        shell.new_command(command_id)
        shell.session.receive(data)  # CREATE_PIPELINE (its first fragments; the rest may come with Send)
        shell.output_ready(shell.session)
        body = ElementTree.Element(q("rsp:CommandResponse"))
        ElementTree.SubElement(body, q("rsp:CommandId")).text = str(command_id).upper()
        return self._response(request, SHELL_ACTION + "CommandResponse", body)

    async def send(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        _require_connected(shell)
        send = request.body.find("rsp:Send", NS)
        if send is None:
            raise faults.schema_error("Send needs rsp:Send")
        for stream in send.findall("rsp:Stream", NS):
            if stream.attrib.get("Name") not in ("stdin", "pr"):
                raise faults.schema_error(f"unknown input stream {stream.attrib.get('Name', '')[:40]!r}")
            command = stream.attrib.get("CommandId")
            if command is not None:
                command_id = _uuid(command)
                if shell.commands.get(command_id) != "open":
                    raise _command_not_found(shell, command_id)
            shell.session.receive(_b64(stream.text))
        shell.output_ready(shell.session)
        return self._response(request, SHELL_ACTION + "SendResponse", ElementTree.Element(q("rsp:SendResponse")))

    async def signal(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        signal = request.body.find("rsp:Signal", NS)
        if signal is None:
            raise faults.schema_error("Signal needs rsp:Signal")
        code = (_text(signal.find("rsp:Code", NS)) or "").lower()
        command_id = _uuid(signal.attrib.get("CommandId", ""))
        if command_id not in shell.commands:
            raise _command_not_found(shell, command_id)
        if code in ("powershell/signal/crtl_c", "powershell/signal/ctrl_c",
                    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"):
            await shell.session.stop_pipeline(command_id)  # PIPELINE_STATE Stopped goes out through Receive
            shell.output_ready(shell.session)
        elif code == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate":
            await shell.terminate_command(command_id)
        else:
            raise faults.invalid_parameter(f"The signal code {code[:100]} is not supported by the PowerShell plugin.")
        return self._response(request, SHELL_ACTION + "SignalResponse", ElementTree.Element(q("rsp:SignalResponse")))

    # ---- Receive --------------------------------------------------------------------------------------

    async def receive(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        _require_connected(shell)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        if desired is None:
            raise faults.schema_error("Receive needs rsp:DesiredStream")
        command_id = _uuid(desired.attrib["CommandId"]) if "CommandId" in desired.attrib else None
        if command_id is not None and command_id not in shell.commands:
            raise _command_not_found(shell, command_id)
        timeout = request.operation_timeout or DEFAULT_OPERATION_TIMEOUT
        budget = max(8192, ((request.max_envelope_size or 153600) - ENVELOPE_OVERHEAD) * 3 // 4)
        deadline = time.monotonic() + timeout
        shell.receivers += 1
        try:
            while True:
                if shell.deleted:
                    raise _aborted()
                if caller.gone():
                    # Nobody to answer: leave the output for the next Receive (or the next client).
                    raise faults.timed_out()
                if shell.outbox.has(command_id):
                    break  # also after a Disconnect meanwhile: MS-WSMV 3.1.4.15 delivers available data first
                if command_id is not None and shell.command_done(command_id):
                    break
                if shell.disconnected:
                    raise _shell_disconnected(shell)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise faults.timed_out()
                changed = shell.changed()
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, 0.5))
                except asyncio.TimeoutError:
                    pass
        finally:
            shell.receivers -= 1
            shell.touch()
        fragments = shell.take(command_id, budget)
        body = ElementTree.Element(q("rsp:ReceiveResponse"))
        attributes = {"Name": "stdout"}
        if command_id is not None:
            attributes["CommandId"] = str(command_id).upper()
        for fragment in fragments:
            ElementTree.SubElement(body, q("rsp:Stream"), attributes).text = base64.b64encode(fragment).decode()
        if command_id is not None and shell.command_done(command_id):
            # As Windows' PowerShell plugin does: CommandState only once the command is Done, with the last output.
            if not fragments:  # the schema wants a Stream: an empty one that ends it
                ElementTree.SubElement(body, q("rsp:Stream"), dict(attributes, End="true"))
            state = ElementTree.SubElement(body, q("rsp:CommandState"), {
                "CommandId": str(command_id).upper(), "State": COMMAND_STATE + "Done"})
            ElementTree.SubElement(state, q("rsp:ExitCode")).text = "0"
            shell.mark_done_delivered(command_id)
        return self._response(request, SHELL_ACTION + "ReceiveResponse", body)

    # ---- Delete, Disconnect, Reconnect, Connect -------------------------------------------------------

    async def delete(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        await self._remove(shell, "deleted by the client")
        return self._response(request, TRANSFER + "DeleteResponse")

    async def _remove(self, shell: WSManShell, why: str) -> None:
        self.shells.pop(shell.shell_id, None)
        await shell.delete(why)

    async def disconnect(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        element = request.body.find("rsp:Disconnect", NS)
        if element is None:
            raise faults.schema_error("Disconnect needs rsp:Disconnect")
        buffer_mode = _text(element.find("rsp:BufferMode", NS))
        if buffer_mode is not None and buffer_mode not in ("Block", "Drop"):
            raise faults.schema_error(f"BufferMode {buffer_mode[:20]!r} is neither Block nor Drop")
        idle_text = _text(element.find("rsp:IdleTimeOut", NS)) or _text(element.find("rsp:IdleTimeout", NS))
        idle = parse_duration(idle_text)
        if idle is not None and idle < MIN_DISCONNECT_IDLE_SECONDS:
            raise faults.invalid_parameter(
                f"The WS-Management service cannot process the request because the IdleTimeOut value "
                f"{idle_text} is less than the minimum of {MIN_DISCONNECT_IDLE_SECONDS} seconds.")
        if shell.disconnected:
            raise _shell_disconnected(shell)
        try:
            shell.disconnect(buffer_mode, idle, "Disconnect")
        except Exception as e:  # psrpcore refuses to disconnect a pool that is not Opened
            raise faults.internal_error(f"The shell cannot be disconnected now: {e}") from None
        return self._response(request, SHELL_ACTION + "DisconnectResponse")  # Windows: an empty body

    async def reconnect(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        if shell.disconnected:
            shell.reconnect()
        elif shell.session_id != request.session_id:
            # MS-WSMV 3.1.4.16: a connected shell may only be "reconnected" by the client that holds it.
            raise faults.internal_error("The shell is connected to another client.")
        return self._response(request, SHELL_ACTION + "ReconnectResponse")  # Windows: an empty body

    async def connect(self, request: Request, caller: Caller, shell: WSManShell) -> ElementTree.Element:
        element = request.body.find("rsp:Connect", NS)
        if element is None:
            raise faults.schema_error("Connect needs rsp:Connect")
        if "CommandId" in element.attrib:
            # A new client re-attaches to one command's output (Receive-PSSession); its Receives follow.
            command_id = _uuid(element.attrib["CommandId"])
            if command_id not in shell.commands:
                raise _command_not_found(shell, command_id)
            return self._response(request, SHELL_ACTION + "ConnectResponse", ElementTree.Element(q("rsp:ConnectResponse")))
        connect_xml = element.find("pwsh:connectXml", NS)
        if connect_xml is None:
            raise faults.schema_error("Connect to a PowerShell shell needs connectXml")
        if not shell.disconnected:
            raise faults.internal_error(
                f"The shell {str(shell.shell_id).upper()} is connected to a client; it can only be connected to "
                "once it is disconnected.")
        data = _b64(connect_xml.text)
        shell.connect_new_client(Owner(caller.user), request.session_id)
        shell.session.receive(data)  # SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL
        shell.output_ready(shell.session)
        # MS-PSRP 3.1.5.3.15: the ConnectResponse carries the server's SESSION_CAPABILITY; Windows also puts
        # RUNSPACEPOOL_INIT_DATA there (pypsrp's recorded exchanges), and APPLICATION_PRIVATE_DATA follows through
        # the client's Receive (3.1.4.10.3).
        capability = shell.outbox.take_message(None, int(PSRPMessageType.SessionCapability))
        init_data = shell.outbox.take_message(None, int(PSRPMessageType.RunspacePoolInitData))
        if capability is None or init_data is None:
            raise faults.internal_error("The PowerShell plugin did not answer the connect request.")
        reply = capability + init_data
        shell.client_ip = caller.client_ip
        log.info("shell %s connected by a new client of %s from %s", shell.shell_id, caller.user, caller.client_ip)
        body = ElementTree.Element(q("rsp:ConnectResponse"))
        ElementTree.SubElement(body, q("rsp:InputStreams")).text = "stdin pr"
        ElementTree.SubElement(body, q("rsp:OutputStreams")).text = "stdout"
        ElementTree.SubElement(body, q("pwsh:connectResponseXml")).text = base64.b64encode(reply).decode()
        return self._response(request, SHELL_ACTION + "ConnectResponse", body)

    # ---- Enumerate ------------------------------------------------------------------------------------

    def enumerate(self, request: Request, caller: Caller) -> ElementTree.Element:
        items = ElementTree.Element(q("wsman:Items"))
        # Shaped as Windows answers (pypsrp's recorded exchanges): an empty EnumerationContext, the items (when
        # there are any) and EndOfSequence, all in one response (OptimizeEnumeration).
        if request.resource_uri == COMMAND_ENUM_URI:
            shell_id = request.body.findtext(
                "wsen:Enumerate/wsman:Filter/wsman:SelectorSet/wsman:Selector[@Name='ShellId']", None, NS)
            shell = self._shell(dataclasses.replace(request, selectors={"ShellId": (shell_id or "").strip()}), caller)
            for command_id in shell.pending_commands():
                command = ElementTree.SubElement(items, q("rsp:Command"))
                ElementTree.SubElement(command, q("rsp:CommandId")).text = str(command_id).upper()
                ElementTree.SubElement(command, q("rsp:CommandLine")).text = ""
                state = "Done" if shell.command_done(command_id) else "Running"
                ElementTree.SubElement(command, q("rsp:CommandState")).text = state
        elif request.resource_uri.rstrip("/") in (SHELL_ENUM_URI, SHELL_ENUM_URI + "/cmd"):
            for shell in self.shells.values():
                if shell.owner == caller.user and not shell.deleted:
                    items.append(self._shell_element(shell, enumerated=True))
        else:
            raise WSManFault("s:Sender", "w:InvalidResourceURI", 2150858770,
                             f"The resource URI {request.resource_uri[:200]} cannot be enumerated by this service.")
        body = ElementTree.Element(q("wsen:EnumerateResponse"))
        ElementTree.SubElement(body, q("wsen:EnumerationContext")).text = ""
        if len(items):
            body.append(items)
        ElementTree.SubElement(body, q("wsman:EndOfSequence"))
        return self._response(request, ENUMERATION + "EnumerateResponse", body)

    # ---- Acknowledge (robust connections) -------------------------------------------------------------

    def acknowledge(self, request: Request, caller: Caller) -> ElementTree.Element:
        last = _text(request.body.find("wsmv:Acknowledge/wsmv:LastSequenceIdReceived", NS))
        if not request.operation_id or last is None or not last.isdigit():
            raise faults.invalid_header("Acknowledge needs wsmv:OperationID and LastSequenceIdReceived")
        if not self.operations.acknowledge(caller.user, request.operation_id, int(last)):
            raise faults.invalid_header(f"unknown OperationID {request.operation_id[:80]}")
        headers = [header_element("wsmv:OperationID", request.operation_id, False)]
        return envelope(ACKNOWLEDGE + "Response", request.message_id, None, headers)

    # ---- timers ---------------------------------------------------------------------------------------

    async def expire(self) -> None:
        now = time.monotonic()
        for shell in list(self.shells.values()):
            action = shell.expiry_action(now)
            if action == "delete":
                await self._remove(shell, f"idle for {shell.idle_timeout:.0f}s without a client (IdleTimeout)")
            elif action == "disconnect":
                try:
                    shell.disconnect(None, None, "no client for the auto-disconnect time")
                except Exception as e:  # a pool that never opened cannot be disconnected: it is removed
                    await self._remove(shell, f"client vanished before the pool opened ({e})")

    def connection_closed(self, connection: int) -> None:
        """A client's TCP connection is gone (MS-WSMV 3.1.6.5): the auto-disconnect clock of the shells it
        served starts now, unless another of their connections is still open."""
        for shell in self.shells.values():
            shell.detach(connection)

    async def close_all(self) -> None:
        for shell in list(self.shells.values()):
            await self._remove(shell, "peer shutting down")


def _text(element: typing.Optional[ElementTree.Element]) -> typing.Optional[str]:
    return None if element is None else (element.text or "").strip()


def _b64(text: typing.Optional[str]) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise faults.schema_error("invalid base64 data") from None


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise faults.schema_error(f"{text[:64]!r} is not a GUID") from None


def _pipeline_id_of(data: bytes) -> typing.Optional[uuid.UUID]:
    """The PID field of the first message in these fragments (MS-PSRP 2.2.4 fragment header, then 2.2.1 message
    header: Destination, MessageType, RPID, PID), or None when the first fragment does not start a message."""
    header = FRAGMENT_HEADER.size
    if len(data) < header + MESSAGE_HEADER_BYTES or not data[16] & 0x1:
        return None
    pid = uuid.UUID(bytes_le=data[header + 24:header + 40])
    return pid if pid.int else None


def _day_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"P{seconds // 86400}DT{seconds % 86400 // 3600}H{seconds % 3600 // 60}M{seconds % 60}S"


def _require_connected(shell: WSManShell) -> None:
    if shell.disconnected:
        raise _shell_disconnected(shell)


def _shell_disconnected(shell: WSManShell) -> WSManFault:
    return WSManFault("s:Receiver", "w:InternalError", 2150859204,  # ERROR_WSMAN_SHELL_DISCONNECTED 0x803381C4
                      f"The WinRS shell {str(shell.shell_id).upper()} is disconnected. Reconnect or connect to it "
                      "before using it.")


def _aborted() -> WSManFault:
    return WSManFault("s:Receiver", "w:InternalError", 995,  # ERROR_OPERATION_ABORTED, what Windows sends
                      "The I/O operation has been aborted because of either a thread exit or an application request.")


def _command_not_found(shell: WSManShell, command_id: uuid.UUID) -> WSManFault:
    return WSManFault("s:Sender", "w:InvalidSelectors", faults.INVALID_SELECTORS,
                      f"The request for the command {str(command_id).upper()} of the Windows Remote Shell with "
                      f"ShellId {str(shell.shell_id).upper()} failed because the command was not found.")
