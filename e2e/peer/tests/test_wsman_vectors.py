"""The peer's WS-Management responses against what real Windows hosts answered, from the recorded exchanges
pypsrp keeps as test data (its 0.9.1 sdist, fetched and checked by psrp/tests/vectors/fetch.sh; MIT licence).

A raw client built on psrpcore's client state machines drives the peer through the same operations as the
recordings (Create, Receive, Command, Disconnect, Enumerate shells and commands, Connect from a new client,
Connect to a command, Receive to Done, Reconnect, Delete, faults), and each response's SOAP skeleton (the
element paths and attribute names of header and body, without the values) must equal that of the recorded
Windows response for the same operation.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import typing
import uuid
import xml.etree.ElementTree as ElementTree

import httpx
import psrpcore
import pytest
import yaml
from psrpcore.types import PSInvocationState, RunspacePoolState

from conftest import PEER_DIR, WSMAN_USERS, WSManPeer

FETCH = PEER_DIR.parents[1] / "psrp" / "tests" / "vectors" / "fetch.sh"
S = "http://www.w3.org/2003/05/soap-envelope"
RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
PWSH = "http://schemas.microsoft.com/powershell"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
PS_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"


@pytest.fixture(scope="module")
def recordings() -> typing.Dict[str, list]:
    directory = os.environ.get("PSRP_VECTORS_DIR")
    if not directory:
        done = subprocess.run(["sh", str(FETCH)], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(f"## no pypsrp vectors ({FETCH} failed: {done.stderr.strip()[-300:]}); nothing checked ##")
        directory = done.stdout.strip()
    return {name: yaml.safe_load(open(os.path.join(directory, name)))["messages"]
            for name in ("test_psrp_disconnected_commands.yml", "test_psrp_disconnect_runspaces.yml",
                         "test_psrp_is_alive_state_disconnected.yml",
                         "test_psrp_is_alive_invalid_selectors.yml", "test_psrp_long_running_cmdlet.yml")}


def recorded(recordings, file: str, action: typing.Optional[str], predicate: typing.Callable[[str, str], bool] = lambda q, r: True
             ) -> ElementTree.Element:
    for message in recordings[file]:
        request, response = str(message["request"]), str(message["response"])
        if (action is None or f">{action}</wsa:Action>" in request) and predicate(request, response):
            return ElementTree.fromstring(response)
    raise AssertionError(f"no recorded {action} in {file}")


def skeleton(element: ElementTree.Element, path: str = "") -> typing.Set[str]:
    """Element paths with their attribute names; values, text and repetition left out."""
    here = f"{path}/{element.tag}[{','.join(sorted(a for a in element.attrib if not a.startswith('{http://www.w3.org/XML')))}]"
    paths = {here}
    for child in element:
        paths |= skeleton(child, here)
    return paths


def body_and_header(envelope: ElementTree.Element) -> typing.Tuple[typing.Set[str], typing.Set[str]]:
    return skeleton(envelope.find(f"{{{S}}}Body")), skeleton(envelope.find(f"{{{S}}}Header"))


def assert_same_shape(ours: ElementTree.Element, windows: ElementTree.Element, what: str) -> None:
    our_body, our_header = body_and_header(ours)
    their_body, their_header = body_and_header(windows)
    assert our_body == their_body, f"{what} body: ours-only {our_body - their_body}, Windows-only {their_body - our_body}"
    # Windows' headers: Action, MessageID, To, RelatesTo, and on newer hosts wsmv:ActivityId (most recordings
    # have it, a few older ones not; the peer always sends it).
    activity = {p for p in our_header | their_header if p.endswith("}ActivityId[]")}
    assert our_header - activity == their_header - activity, f"{what} header: {our_header ^ their_header}"


class RawClient:
    """Plain SOAP over HTTP Basic (the peer allows unencrypted bodies here), PSRP from psrpcore's client."""

    def __init__(self, peer: WSManPeer) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{peer.port}", auth=("alice", WSMAN_USERS["alice"]),
                                 timeout=30)

    def post(self, action: str, body: str = "", shell_id: typing.Optional[uuid.UUID] = None,
             resource_uri: str = PS_URI, timeout: int = 5) -> ElementTree.Element:
        selectors = (f'<w:SelectorSet><w:Selector Name="ShellId">{str(shell_id).upper()}</w:Selector></w:SelectorSet>'
                     if shell_id else "")
        envelope = f"""<s:Envelope xmlns:s="{S}" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="{RSP}"><s:Header><a:Action>{action}</a:Action>
<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID><a:To>http://127.0.0.1/wsman</a:To>
<w:ResourceURI>{resource_uri}</w:ResourceURI><w:MaxEnvelopeSize>512000</w:MaxEnvelopeSize>
<w:OperationTimeout>PT{timeout}S</w:OperationTimeout>{selectors}</s:Header><s:Body>{body}</s:Body></s:Envelope>"""
        response = self.http.post("/wsman", content=envelope.encode(),
                                  headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
        return ElementTree.fromstring(response.content)

    def receive(self, pool: psrpcore.ClientRunspacePool, shell_id: uuid.UUID,
                command_id: typing.Optional[uuid.UUID] = None) -> ElementTree.Element:
        attribute = f' CommandId="{str(command_id).upper()}"' if command_id else ""
        response = self.post(SHELL + "Receive", f"<rsp:Receive><rsp:DesiredStream{attribute}>stdout"
                                                f"</rsp:DesiredStream></rsp:Receive>", shell_id)
        for stream in response.iter(f"{{{RSP}}}Stream"):
            if stream.text:
                pool.receive_data(psrpcore.PSRPPayload(base64.b64decode(stream.text), psrpcore.StreamType.default,
                                                       command_id))
        while pool.next_event() is not None:
            pass
        return response


def payload(pool: psrpcore.ClientRunspacePool) -> str:
    data = b""
    while (chunk := pool.data_to_send()) is not None:
        data += chunk.data
    return base64.b64encode(data).decode()


def test_responses_have_windows_shape(tmp_path, recordings):
    peer = WSManPeer(tmp_path, "--wsman-allow-unencrypted")
    try:
        raw = RawClient(peer)
        disconnected = "test_psrp_disconnected_commands.yml"

        pool = psrpcore.ClientRunspacePool()
        pool.open()
        shell_id = pool.runspace_pool_id
        created = raw.post(TRANSFER + "Create", f'<rsp:Shell ShellId="{str(shell_id).upper()}"><rsp:InputStreams>stdin pr'
                           f'</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams><creationXml xmlns="{PWSH}">'
                           f"{payload(pool)}</creationXml></rsp:Shell>")
        assert_same_shape(created, recorded(recordings, disconnected, TRANSFER + "Create"), "CreateResponse")
        while pool.state != RunspacePoolState.Opened:
            raw.receive(pool, shell_id)

        ps = psrpcore.ClientPowerShell(pool)
        ps.add_script("1..3 | ForEach-Object { \"line $_\"; Start-Sleep -Milliseconds 300 }")
        ps.start()
        command = raw.post(SHELL + "Command", f'<rsp:CommandLine CommandId="{str(ps.pipeline_id).upper()}"><rsp:Command />'
                           f"<rsp:Arguments>{payload(pool)}</rsp:Arguments></rsp:CommandLine>", shell_id)
        assert_same_shape(command, recorded(recordings, disconnected, SHELL + "Command"), "CommandResponse")

        disconnect = raw.post(SHELL + "Disconnect", "<rsp:Disconnect />", shell_id)
        assert_same_shape(disconnect, recorded(recordings, disconnected, SHELL + "Disconnect"), "DisconnectResponse")

        got = raw.post(TRANSFER + "Get", shell_id=shell_id, resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell")
        windows_get = recorded(recordings, "test_psrp_is_alive_state_disconnected.yml", TRANSFER + "Get",
                               lambda q, r: "<rsp:State>Disconnected" in r)
        assert_same_shape(got, windows_get, "GetResponse (shell)")
        assert got.find(f".//{{{RSP}}}State").text == "Disconnected"

        shells = raw.post("http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
                          "<wsen:Enumerate xmlns:wsen=\"http://schemas.xmlsoap.org/ws/2004/09/enumeration\" "
                          "xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"><wsman:OptimizeEnumeration />"
                          "<wsman:MaxElements>32000</wsman:MaxElements></wsen:Enumerate>",
                          resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell")
        assert_same_shape(shells, recorded(recordings, disconnected, "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
                                           lambda q, r: "Filter" not in q),
                          "EnumerateResponse (shells)")
        commands = raw.post("http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
                            "<wsen:Enumerate xmlns:wsen=\"http://schemas.xmlsoap.org/ws/2004/09/enumeration\" "
                            "xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"><wsman:OptimizeEnumeration />"
                            "<wsman:MaxElements>32000</wsman:MaxElements><wsman:Filter Dialect=\"http://schemas.dmtf.org/"
                            "wbem/wsman/1/wsman/SelectorFilter\"><wsman:SelectorSet><wsman:Selector Name=\"ShellId\">"
                            f"{str(shell_id).upper()}</wsman:Selector></wsman:SelectorSet></wsman:Filter></wsen:Enumerate>",
                            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command")
        assert_same_shape(commands, recorded(recordings, disconnected, "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
                                             lambda q, r: "Filter" in q), "EnumerateResponse (commands)")

        # A new client connects to the disconnected shell and takes the command's output.
        second = psrpcore.ClientRunspacePool(runspace_pool_id=shell_id)
        second.connect()
        connect = raw.post(SHELL + "Connect", f'<rsp:Connect><connectXml xmlns="{PWSH}">{payload(second)}</connectXml>'
                           "</rsp:Connect>", shell_id)
        assert_same_shape(connect, recorded(recordings, disconnected, SHELL + "Connect", lambda q, r: "connectXml" in q),
                          "ConnectResponse")
        text = connect.find(f"{{{S}}}Body/{{{RSP}}}ConnectResponse/{{{PWSH}}}connectResponseXml").text
        second.receive_data(psrpcore.PSRPPayload(base64.b64decode(text), psrpcore.StreamType.default, None))
        while second.next_event() is not None:
            pass
        while second.state != RunspacePoolState.Opened:
            raw.receive(second, shell_id)
        connect_command = raw.post(SHELL + "Connect", f'<rsp:Connect CommandId="{str(ps.pipeline_id).upper()}" />', shell_id)
        assert_same_shape(connect_command, recorded(recordings, disconnected, SHELL + "Connect",
                                                    lambda q, r: "CommandId" in q), "ConnectResponse (command)")
        second_ps = psrpcore.ClientPowerShell(second, pipeline_id=ps.pipeline_id)
        second_ps.state = PSInvocationState.Running
        last = None
        for _ in range(40):
            last = raw.receive(second, shell_id, ps.pipeline_id)
            if last.find(f".//{{{RSP}}}CommandState") is not None:
                break
        assert_same_shape(last, recorded(recordings, disconnected, SHELL + "Receive", lambda q, r: "CommandState/Done" in r),
                          "ReceiveResponse (Done)")

        reconnect_shape = recorded(recordings, disconnected, SHELL + "Reconnect")
        delete = raw.post(TRANSFER + "Delete", shell_id=shell_id)
        assert_same_shape(delete, recorded(recordings, disconnected, TRANSFER + "Delete"), "DeleteResponse")
        assert_same_shape(delete, reconnect_shape, "empty bodies")

        gone = raw.post(SHELL + "Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>",
                        shell_id)
        # Windows' recording is of a wst:Get on a closed shell; the fault is the same for any operation on it.
        assert_same_shape(gone, recorded(recordings, "test_psrp_is_alive_invalid_selectors.yml", None,
                                         lambda q, r: "InvalidSelectors" in r), "InvalidSelectors fault")
    finally:
        peer.stop()
    assert "Traceback" not in peer.log_text(), peer.log_text()[-3000:]


def test_timed_out_fault_has_windows_shape(tmp_path, recordings):
    peer = WSManPeer(tmp_path, "--wsman-allow-unencrypted")
    try:
        raw = RawClient(peer)
        pool = psrpcore.ClientRunspacePool()
        pool.open()
        shell_id = pool.runspace_pool_id
        raw.post(TRANSFER + "Create", f'<rsp:Shell><creationXml xmlns="{PWSH}">{payload(pool)}</creationXml></rsp:Shell>')
        while pool.state != RunspacePoolState.Opened:
            raw.receive(pool, shell_id)
        timed_out = raw.post(SHELL + "Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>",
                             shell_id, timeout=1)
        windows = recorded(recordings, "test_psrp_long_running_cmdlet.yml", SHELL + "Receive", lambda q, r: "TimedOut" in r)
        assert_same_shape(timed_out, windows, "TimedOut fault")
        text = lambda e: e.find(f"{{{S}}}Body/{{{S}}}Fault/{{{S}}}Reason/{{{S}}}Text").text  # noqa: E731
        assert text(timed_out) == text(windows)
        raw.post(TRANSFER + "Delete", shell_id=shell_id)
    finally:
        peer.stop()
