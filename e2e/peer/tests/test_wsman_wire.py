"""The WS-Management peer at the HTTP and SOAP level: garbage and limits (the peer answers and lives on), the
XML shape of Windows' faults, OperationTimeout, and robust connection support (MS-WSMV 3.1.4.1.39: a Receive
response fetched again by OperationID, Acknowledge).
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import socket
import time
import typing
import uuid
import xml.etree.ElementTree as ElementTree

import httpx
import psrp
import pytest

from conftest import WSMAN_USERS, WSManPeer, arun, wsman_info

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
PS_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> typing.Iterator[WSManPeer]:
    p = WSManPeer(tmp_path_factory.mktemp("wire"), "--wsman-allow-unencrypted")
    yield p
    assert p.alive(), p.log_text()[-3000:]
    p.stop()
    assert "Traceback" not in p.log_text(), p.log_text()[-5000:]


def raw(peer: WSManPeer, data: bytes, read_timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", peer.port), timeout=read_timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else -1


def envelope(action: str, body: str = "", shell_id: typing.Optional[str] = None, timeout: str = "PT20S",
             operation_id: typing.Optional[str] = None, retransmit: bool = False, sequence_id: int = 1,
             resource_uri: str = PS_URI) -> bytes:
    selectors = (f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
                 if shell_id else "")
    robust = ""
    if operation_id:
        robust = (f'<p:OperationID s:mustUnderstand="{"true" if retransmit else "false"}">uuid:{operation_id}'
                  f'</p:OperationID><p:SequenceID s:mustUnderstand="false">{sequence_id}</p:SequenceID>')
    return f"""<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['wsa']}" xmlns:w="{NS['wsman']}" xmlns:p="{NS['wsmv']}"
 xmlns:rsp="{NS['rsp']}"><s:Header><a:To>http://127.0.0.1/wsman</a:To><a:Action s:mustUnderstand="true">{action}</a:Action>
<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID><w:ResourceURI s:mustUnderstand="true">{resource_uri}</w:ResourceURI>
<w:MaxEnvelopeSize s:mustUnderstand="true">153600</w:MaxEnvelopeSize><w:OperationTimeout>{timeout}</w:OperationTimeout>
<p:SessionId s:mustUnderstand="false">uuid:{str(uuid.uuid4()).upper()}</p:SessionId>{selectors}{robust}</s:Header>
<s:Body>{body}</s:Body></s:Envelope>""".encode()


def post(peer: WSManPeer, data: bytes, user: str = "alice", client: typing.Optional[httpx.Client] = None
         ) -> httpx.Response:
    headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
    auth = (user, WSMAN_USERS[user])
    if client is not None:
        return client.post(f"http://127.0.0.1:{peer.port}/wsman", content=data, headers=headers, auth=auth)
    return httpx.post(f"http://127.0.0.1:{peer.port}/wsman", content=data, headers=headers, auth=auth, timeout=30)


def fault_of(response: httpx.Response) -> typing.Tuple[str, str, int, str]:
    assert response.status_code == 500, response.text
    root = ElementTree.fromstring(response.content)
    fault = root.find("s:Body/s:Fault", NS)
    assert root.findtext("s:Header/wsa:Action", None, NS) in (
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault")
    assert root.findtext("s:Header/wsa:RelatesTo", None, NS)
    detail = fault.find("s:Detail/f:WSManFault", NS)
    assert detail.attrib["Machine"]
    # Windows wraps a provider's fault in f:Message/f:ProviderFault/f:WSManFault (its recorded exchanges).
    inner = detail.find("f:Message/f:ProviderFault/f:WSManFault", NS)
    message = (inner if inner is not None else detail).findtext("f:Message", None, NS)
    assert message and fault.findtext("s:Reason/s:Text", None, NS)
    return (fault.findtext("s:Code/s:Value", None, NS), fault.findtext("s:Code/s:Subcode/s:Value", None, NS),
            int(detail.attrib["Code"]), message)


# ---- HTTP garbage and limits ---------------------------------------------------------------------------

def test_http_garbage_is_answered_and_survived(peer):
    rng = random.Random(5985)
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /wsman HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST /wsman HTTP/2.0\r\n\r\n", 505),
        (b"POST /wsman HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /wsman HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /wsman HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /wsman HTTP/1.1\r\n" + b"X-A: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404),
        (b"POST /wsman HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"POST /wsman HTTP/1.1\r\nAuthorization: Negotiate !!!\r\n\r\n", 401),
        (b"POST /wsman HTTP/1.1\r\nAuthorization: Negotiate " + base64.b64encode(b"NTLMSSP\x00garbage") + b"\r\n\r\n", 401),
        (b"POST /wsman HTTP/1.1\r\nAuthorization: Basic " + base64.b64encode(b"alice:nope") + b"\r\n\r\n", 401),
    ]
    for data, expected in cases:
        assert status_of(raw(peer, data)) == expected, data[:60]
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        reply = raw(peer, blob + b"\r\n\r\n", read_timeout=5)
        assert reply == b"" or status_of(reply) in (400, 401, 404, 405, 413, 431, 501, 505), reply[:80]
    assert peer.alive()
    assert post(peer, envelope(SHELL + "Receive", shell_id=str(uuid.uuid4()))).status_code == 500  # still serving


def test_soap_garbage_gets_faults(peer):
    for body in (b"not xml", b"<a/>", b'<!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
                 envelope(SHELL + "Receive").replace(b"<a:Action", b"<a:Nope").replace(b"</a:Action>", b"</a:Nope>"),
                 envelope("urn:unknown-action"),
                 envelope(SHELL + "Receive", timeout="PTxS", shell_id=str(uuid.uuid4())),
                 envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "<rsp:Shell/>"),
                 envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
                          '<rsp:Shell><creationXml xmlns="http://schemas.microsoft.com/powershell">!!</creationXml>'
                          "</rsp:Shell>"),
                 envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
                          '<rsp:Shell><creationXml xmlns="http://schemas.microsoft.com/powershell">'
                          + base64.b64encode(b"\x00" * 30).decode() + "</creationXml></rsp:Shell>")):
        response = post(peer, body)
        assert response.status_code == 500, body[:80]
        assert b"Fault" in response.content
    assert peer.alive()


# ---- faults as Windows sends them ----------------------------------------------------------------------

def test_shell_not_found_fault(peer):
    shell_id = str(uuid.uuid4()).upper()
    response = post(peer, envelope(SHELL + "Receive", shell_id=shell_id))
    code, subcode, wsman_code, message = fault_of(response)
    assert (code, subcode, wsman_code) == ("s:Sender", "w:InvalidSelectors", 2150858843)
    assert "invalid selectors for the resource" in message
    root = ElementTree.fromstring(response.content)
    assert root.findtext("s:Body/s:Fault/s:Detail/wsman:FaultDetail", None, NS).endswith("/UnexpectedSelectors")


def test_bad_operation_timeout_is_an_invalid_header(peer):
    response = post(peer, envelope(SHELL + "Receive", shell_id=str(uuid.uuid4()), timeout="PT-1S"))
    code, subcode, wsman_code, message = fault_of(response)
    assert (subcode, wsman_code) == ("wsa:InvalidMessageInformationHeader", 2150858767)
    assert message == "The XML contains an invalid timeout field in the SOAP header: PT-1S. "


def test_unknown_configuration_fault(peer):
    response = post(peer, envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", "<rsp:Shell/>",
                                   resource_uri="http://schemas.microsoft.com/powershell/NoSuchEndpoint"))
    code, subcode, wsman_code, message = fault_of(response)
    assert wsman_code == 2150858770 and "NoSuchEndpoint" in message


class OpenShell:
    """A shell opened by pypsrp (Basic), with a pipeline whose output is left for raw Receives: the pypsrp
    client disconnects, and the raw client reconnects."""

    def __init__(self, peer: WSManPeer, script: str, user: str = "alice") -> None:
        async def open_and_disconnect():
            pool = psrp.AsyncRunspacePool(wsman_info(peer, user, auth="basic", encryption="never"))
            await pool.open()
            ps = psrp.AsyncPowerShell(pool)
            ps.add_script(script)
            task = await ps.invoke_async()
            await pool.disconnect()
            task.cancel()
            await pool._connection._connection.close()  # pypsrp keeps its main HTTP connection open otherwise
            return str(pool._pool.runspace_pool_id).upper(), str(ps._pipeline.pipeline_id).upper()

        self.shell_id, self.command_id = arun(open_and_disconnect())
        self.peer = peer
        response = post(peer, envelope(SHELL + "Reconnect", shell_id=self.shell_id), user)
        assert response.status_code == 200, response.text

    def receive(self, operation_id: typing.Optional[str] = None, retransmit: bool = False, timeout: str = "PT5S",
                client: typing.Optional[httpx.Client] = None) -> httpx.Response:
        body = f'<rsp:Receive><rsp:DesiredStream CommandId="{self.command_id}">stdout</rsp:DesiredStream></rsp:Receive>'
        return post(self.peer, envelope(SHELL + "Receive", body, self.shell_id, timeout, operation_id, retransmit),
                    client=client)

    def delete(self) -> None:
        post(self.peer, envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", shell_id=self.shell_id))


def streams(response: httpx.Response) -> typing.List[bytes]:
    assert response.status_code == 200, response.text
    root = ElementTree.fromstring(response.content)
    return [base64.b64decode(s.text) for s in root.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", NS) if s.text]


def test_receive_times_out_with_w_timedout(peer):
    shell = OpenShell(peer, "Start-Sleep -Seconds 30")
    try:
        while shell.receive(timeout="PT1S").status_code == 200:  # what is pending (PIPELINE_STATE Running)
            pass
        started = time.monotonic()
        code, subcode, wsman_code, _ = fault_of(shell.receive(timeout="PT1S"))
        elapsed = time.monotonic() - started
        assert (code, subcode, wsman_code) == ("s:Receiver", "w:TimedOut", 2150858793)
        assert 0.9 < elapsed < 3, elapsed
    finally:
        shell.delete()


def test_other_users_shell_is_access_denied(peer):
    shell = OpenShell(peer, "Start-Sleep -Seconds 30")
    try:
        body = envelope(SHELL + "Reconnect", shell_id=shell.shell_id)
        code, subcode, wsman_code, _ = fault_of(post(peer, body, "bob"))
        assert (subcode, wsman_code) == ("w:AccessDenied", 5)
    finally:
        shell.delete()


# ---- robust connections (MS-WSMV 3.1.4.1.39) -----------------------------------------------------------

def test_receive_response_fetched_again_by_operation_id(peer):
    shell = OpenShell(peer, "1..5 | ForEach-Object { \"line $_\"; Start-Sleep -Milliseconds 300 }")
    try:
        operation = str(uuid.uuid4()).upper()
        first = shell.receive(operation)
        root = ElementTree.fromstring(first.content)
        assert root.findtext("s:Header/wsmv:OperationID", None, NS) == f"uuid:{operation}"
        assert root.findtext("s:Header/wsmv:SequenceID", None, NS) == "1"
        data = streams(first)
        assert data
        # The response was "lost": the client asks again with the same OperationID, mustUnderstand=true.
        again = shell.receive(operation, retransmit=True)
        assert streams(again) == data  # the same output, not taken from the shell a second time
        # A new operation gets the next output, nothing twice.
        later = streams(shell.receive(str(uuid.uuid4())))
        assert later and later != data
        # The same OperationID without mustUnderstand=true is a new request reusing an id: refused.
        code, subcode, _, _ = fault_of(shell.receive(operation))
        assert subcode == "wsa:InvalidMessageInformationHeader"
        # Acknowledge releases the kept response; a retransmission then runs as a new operation.
        ack = f"""<p:Acknowledge xmlns:p="{NS['wsmv']}"><p:LastSequenceIdReceived>1</p:LastSequenceIdReceived></p:Acknowledge>"""
        response = post(peer, envelope("http://schemas.microsoft.com/wbem/wsman/1/wsman/Acknowledge", ack,
                                       operation_id=operation,
                                       resource_uri="http://schemas.microsoft.com/wbem/wsman/1/wsman/RobustConnection"))
        assert response.status_code == 200, response.text
        after_ack = streams(shell.receive(operation, retransmit=True))
        assert after_ack != data
    finally:
        shell.delete()


def test_retransmission_waits_for_a_receive_cut_by_an_outage(peer):
    shell = OpenShell(peer, "Start-Sleep -Seconds 2; Write-Output 'late'")
    try:
        operation = str(uuid.uuid4()).upper()
        body = envelope(SHELL + "Receive",
                        f'<rsp:Receive><rsp:DesiredStream CommandId="{shell.command_id}">stdout</rsp:DesiredStream>'
                        "</rsp:Receive>", shell.shell_id, "PT10S", operation)
        auth = base64.b64encode(f"alice:{WSMAN_USERS['alice']}".encode()).decode()
        request = (f"POST /wsman HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                   f"Content-Type: application/soap+xml;charset=UTF-8\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", peer.port))
        sock.sendall(request + body)
        time.sleep(0.3)
        sock.close()  # the outage: the Receive is pending, its connection gone
        response = shell.receive(operation, retransmit=True)
        assert response.status_code == 200, response.text
        # Whatever the cut Receive produced is what the retransmission returns; the output is not lost.
        data = b"".join(streams(response))
        if b"late" not in data:
            data += b"".join(streams(shell.receive(str(uuid.uuid4()))))
        assert b"late" in data
    finally:
        shell.delete()


# ---- sealed bodies on an NTLM connection ----------------------------------------------------------------

class NtlmConnection:
    """A raw keep-alive HTTP connection that authenticates with pyspnego's NTLM initiator, as pypsrp does."""

    def __init__(self, peer: WSManPeer, password: str = WSMAN_USERS["alice"]) -> None:
        import spnego

        self.sock = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.context = spnego.client("alice", password, hostname="127.0.0.1", service="http", protocol="ntlm",
                                     options=spnego.NegotiateOptions.wrapping_winrm)
        token = self.context.step()
        while True:
            status, headers, _ = self.request(b"", {"Authorization": "Negotiate " + base64.b64encode(token).decode()})
            challenge = headers.get("www-authenticate", "")
            if status != 401 or not challenge.startswith("Negotiate "):
                break
            token = self.context.step(base64.b64decode(challenge.split(" ", 1)[1]))
        self.status = status

    def request(self, body: bytes, headers: typing.Dict[str, str]) -> typing.Tuple[int, typing.Dict[str, str], bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(f"POST /wsman HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int(self.file.readline().split(b" ", 2)[1])
        response_headers = {}
        while (line := self.file.readline().rstrip(b"\r\n")):
            name, _, value = line.decode().partition(":")
            response_headers[name.lower()] = value.strip()
        data = self.file.read(int(response_headers.get("content-length", "0")))
        return status, response_headers, data

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_sealed_body_garbage_is_refused(peer):
    from psrp._io.wsman import encrypt_wsman

    connection = NtlmConnection(peer)
    try:
        assert connection.status == 200
        protocol = 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'
        for body in (b"", b"garbage", b"--Encrypted Boundary--\r\n",
                     b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
                     b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=5\r\n--Encrypted Boundary\r\n"
                     b"\tContent-Type: application/octet-stream\r\n\x10\x00\x00\x00" + b"\x00" * 20 + b"--Encrypted Boundary--\r\n"):
            status, _, _ = connection.request(body, {"Content-Type": protocol})
            assert status == 400
            connection.close()
            connection = NtlmConnection(peer)  # a bad seal spoils the context's sequence numbers: start afresh
        # A well-sealed request works on the same kind of connection.
        data, content_type = encrypt_wsman(bytearray(envelope(SHELL + "Receive", shell_id=str(uuid.uuid4()))),
                                           "application/soap+xml;charset=UTF-8",
                                           "application/HTTP-SPNEGO-session-encrypted", connection.context)
        status, headers, reply = connection.request(data, {"Content-Type": content_type})
        assert status == 500 and headers["content-type"].startswith("multipart/encrypted")
    finally:
        connection.close()
    assert peer.alive()


def test_ntlm_wrong_password_is_401(peer):
    connection = NtlmConnection(peer, password="wrong")
    try:
        assert connection.status == 401
    finally:
        connection.close()


def test_received_commands_are_not_offered_to_a_new_client(peer):
    shell = OpenShell(peer, "Write-Output 'quick'")
    try:
        for _ in range(20):
            response = shell.receive()
            if b"CommandState/Done" in response.content:
                break
        else:
            raise AssertionError("no Done")
        assert post(peer, envelope(SHELL + "Disconnect", "<rsp:Disconnect />", shell.shell_id)).status_code == 200
        enumerate_commands = envelope(
            "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
            '<n:Enumerate xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><w:OptimizeEnumeration/>'
            '<w:Filter Dialect="http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter"><w:SelectorSet>'
            f'<w:Selector Name="ShellId">{shell.shell_id}</w:Selector></w:SelectorSet></w:Filter></n:Enumerate>',
            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command")
        root = ElementTree.fromstring(post(peer, enumerate_commands).content)
        assert root.findall(".//rsp:CommandId", NS) == []  # the client already has the whole pipeline
    finally:
        shell.delete()


def test_bad_psrp_data_costs_only_that_shell(peer):
    victim = OpenShell(peer, "Start-Sleep -Seconds 30")
    bystander = OpenShell(peer, "Start-Sleep -Seconds 30")
    try:
        garbage = base64.b64encode(b"\x00" * 21 + b"not a psrp message").decode()
        body = (f'<rsp:Send><rsp:Stream Name="stdin" CommandId="{victim.command_id}">{garbage}</rsp:Stream>'
                "</rsp:Send>")
        code, subcode, _, message = fault_of(post(peer, envelope(SHELL + "Send", body, victim.shell_id)))
        assert subcode == "w:InternalError" and "rejected the client's data" in message
        # The shell that sent garbage is gone; the other one is untouched.
        assert fault_of(victim.receive())[1] == "w:InvalidSelectors"
        assert bystander.receive(timeout="PT1S").status_code in (200, 500)
        assert "rejected" not in bystander.receive(timeout="PT1S").text
        for action, bad in (("Send", '<rsp:Send><rsp:Stream Name="stdin">!!!</rsp:Stream></rsp:Send>'),
                            ("Send", '<rsp:Send><rsp:Stream Name="other">AAAA</rsp:Stream></rsp:Send>'),
                            ("Signal", '<rsp:Signal CommandId="nope"><rsp:Code>x</rsp:Code></rsp:Signal>'),
                            ("Disconnect", "<rsp:Disconnect><rsp:BufferMode>Sideways</rsp:BufferMode></rsp:Disconnect>"),
                            ("Disconnect", "<rsp:Disconnect><rsp:IdleTimeOut>soon</rsp:IdleTimeOut></rsp:Disconnect>")):
            response = post(peer, envelope(SHELL + action, bad, bystander.shell_id))
            assert response.status_code == 500 and b"Fault" in response.content, (bad, response.text)
        assert peer.alive()
    finally:
        victim.delete()
        bystander.delete()


def test_mutated_requests_never_break_the_peer(peer):
    """Valid requests to a live shell, mutated at random (bytes flipped, cut short, elements and attributes
    renamed, base64 damaged): every one gets an HTTP answer, and the peer logs no internal error."""
    rng = random.Random(20261125)
    shell = OpenShell(peer, "1..100000 | ForEach-Object { $_; Start-Sleep -Milliseconds 20 }")
    garbage = base64.b64encode(bytes(rng.randrange(256) for _ in range(64))).decode()
    bodies = [
        (SHELL + "Receive", f'<rsp:Receive><rsp:DesiredStream CommandId="{shell.command_id}">stdout</rsp:DesiredStream></rsp:Receive>'),
        (SHELL + "Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>"),
        (SHELL + "Send", f'<rsp:Send><rsp:Stream Name="stdin" CommandId="{shell.command_id}">{garbage}</rsp:Stream></rsp:Send>'),
        (SHELL + "Signal", f'<rsp:Signal CommandId="{shell.command_id}"><rsp:Code>powershell/signal/crtl_c</rsp:Code></rsp:Signal>'),
        (SHELL + "Command", f'<rsp:CommandLine CommandId="{uuid.uuid4()}"><rsp:Command/><rsp:Arguments>{garbage}</rsp:Arguments></rsp:CommandLine>'),
        (SHELL + "Connect", f'<rsp:Connect><connectXml xmlns="http://schemas.microsoft.com/powershell">{garbage}</connectXml></rsp:Connect>'),
        ("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
         f'<rsp:Shell><creationXml xmlns="http://schemas.microsoft.com/powershell">{garbage}</creationXml></rsp:Shell>'),
    ]

    def mutate(data: bytes) -> bytes:
        choice = rng.randrange(5)
        if choice == 0:  # flip bytes
            data = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        if choice == 1:  # cut short
            return data[:rng.randrange(len(data))]
        if choice == 2:  # rename an element
            names = re.findall(rb"<([a-zA-Z]+:[A-Za-z]+)", data)
            name = rng.choice(names)
            return data.replace(name, name + b"X", 1)
        if choice == 3:  # damage an attribute value
            return re.sub(rb'="[^"]*"', b'="%s"' % bytes(rng.choice(b"!\x01\xff{}") for _ in range(3)), data, count=1)
        return data.replace(b"PT2S", rng.choice([b"PT-1S", b"P", b"PT99999999999S", b"PT0S"]))

    answered = 0
    for _ in range(300):
        action, body = rng.choice(bodies)
        data = mutate(envelope(action, body, shell.shell_id, timeout="PT2S"))
        response = httpx.post(f"http://127.0.0.1:{peer.port}/wsman", content=data, timeout=30,
                              headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                              auth=("alice", WSMAN_USERS["alice"]))
        assert response.status_code in (200, 500), (response.status_code, data[:300])
        answered += 1
    assert answered == 300 and peer.alive()
    log = peer.log_text()
    assert "Traceback" not in log and "peer bug" not in log, log[-3000:]
    shell.delete()


def test_quiet_client_with_open_connection_keeps_its_shell_connected(tmp_path):
    """Auto-disconnect follows the client's TCP connections (MS-WSMV 3.1.6.5), not its silence."""
    own = WSManPeer(tmp_path, "--wsman-allow-unencrypted", "--wsman-auto-disconnect", "1")
    try:
        shell = OpenShell(own, "Start-Sleep -Seconds 30")
        enumerate_shells = envelope("http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate",
                                    '<n:Enumerate xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration">'
                                    "<w:OptimizeEnumeration/></n:Enumerate>",
                                    resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell")

        def state() -> str:
            root = ElementTree.fromstring(post(own, enumerate_shells).content)
            return root.findtext(".//rsp:Shell/rsp:State", None, NS)

        with httpx.Client(timeout=30) as keep_alive:
            # One request on a connection that stays open, then silence.
            assert shell.receive(timeout="PT1S", client=keep_alive).status_code in (200, 500)
            time.sleep(2.5)
            assert state() == "Connected"
        deadline = time.monotonic() + 10
        while state() != "Disconnected":  # its last connection closed: the clock runs
            assert time.monotonic() < deadline
            time.sleep(0.2)
        shell.delete()
    finally:
        own.stop()
