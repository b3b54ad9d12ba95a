"""Out-of-process packets (framing.py) and PSRP fragment reassembly (fragments.py)."""

from __future__ import annotations

import base64
import struct
import uuid

import pytest
from psrpcore import StreamType
from psrpcore.types import PSRPMessageType

from psrp_peer import framing
from psrp_peer.fragments import MESSAGE_HEADER_BYTES, Defragmenter, FragmentError, Message

GUID = uuid.UUID("0b3e6c2f-6f0e-4d57-9a55-6a2f1f4f2b11")


def test_parse_data_packets():
    packet = framing.parse_packet(b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>"
                                  + base64.b64encode(b"abc") + b"</Data>\n")
    assert packet == framing.Packet("Data", None, StreamType.default, b"abc")
    packet = framing.parse_packet(f"<Data Stream='PromptResponse' PSGuid='{GUID}'></Data>".encode())
    assert packet == framing.Packet("Data", GUID, StreamType.prompt_response, b"")


@pytest.mark.parametrize("tag", ["Command", "Signal", "Close", "DataAck", "CommandAck", "SignalAck", "CloseAck"])
def test_parse_guid_packets(tag):
    assert framing.parse_packet(f"<{tag} PSGuid='{GUID}' />".encode()) == framing.Packet(tag, GUID)


def test_built_packets_parse_back():
    line = framing.data_packet(b"\x00\xff", GUID, StreamType.prompt_response)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert framing.parse_packet(line) == framing.Packet("Data", GUID, StreamType.prompt_response, b"\x00\xff")
    assert framing.parse_packet(framing.guid_packet("CloseAck", None)) == framing.Packet("CloseAck", None)


@pytest.mark.parametrize("line", [
    b"not xml at all",
    b"<Data PSGuid='x'>",
    b"<Bogus PSGuid='00000000-0000-0000-0000-000000000000' />",
    b"<Command />",
    b"<Command PSGuid='not-a-guid' />",
    b"<Command PSGuid='00000000-0000-0000-0000-000000000000'>text</Command>",
    b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>!!notbase64!!</Data>",
    b"<Data Stream='Sideways' PSGuid='00000000-0000-0000-0000-000000000000'></Data>",
    b"<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'><x/></Data>",
    b"<!DOCTYPE d [<!ENTITY e 'x'>]><Close PSGuid='00000000-0000-0000-0000-000000000000' />",
    b"\xff\xfe<Close PSGuid='00000000-0000-0000-0000-000000000000' />",
])
def test_malformed_packets_raise_framing_error(line):
    with pytest.raises(framing.FramingError):
        framing.parse_packet(line)


def fragment(object_id: int, fragment_id: int, data: bytes, start: bool, end: bool) -> bytes:
    return struct.pack(">QQBI", object_id, fragment_id, (1 if start else 0) | (2 if end else 0), len(data)) + data


def message(message_type: int, body: bytes = b"<Obj />") -> bytes:
    return struct.pack("<II", 2, message_type) + bytes(32) + body


def test_reassembles_interleaved_multi_fragment_messages():
    a, b = message(PSRPMessageType.SessionCapability), message(PSRPMessageType.InitRunspacePool, b"x" * 100)
    d = Defragmenter()
    assert d.feed(fragment(1, 0, a[:10], True, False) + fragment(2, 0, b[:50], True, False)) == []
    assert d.feed(fragment(2, 1, b[50:], False, True)) == [Message(2, b)]
    assert d.feed(fragment(1, 1, a[10:20], False, False) + fragment(1, 2, a[20:], False, True)) == [Message(1, a)]


def test_message_type_and_unknown_types():
    known = Message(1, message(PSRPMessageType.CreatePipeline))
    assert known.known and known.type_name == "CreatePipeline"
    unknown = Message(1, message(0x00099999))
    assert not unknown.known and unknown.type_name == "0x00099999"
    single = Defragmenter().feed(unknown.as_single_fragment())
    assert single == [unknown], "re-framing as one fragment must round-trip"


@pytest.mark.parametrize("blob", [
    fragment(1, 1, b"x", False, True),  # continuation without a start
    fragment(1, 0, message(2), True, True)[:10],  # truncated header
    fragment(1, 0, message(2), True, True)[:-1],  # blob shorter than BlobLength
    fragment(1, 1, message(2), True, True),  # start flag on fragment 1
    fragment(1, 0, b"short", True, True),  # shorter than a message header
    fragment(1, 0, b"a", True, False) + fragment(1, 0, b"b", True, False),  # started twice
    fragment(1, 0, b"a", True, False) + fragment(1, 2, b"b", False, True),  # fragment skipped
])
def test_fragment_errors(blob):
    with pytest.raises(FragmentError):
        Defragmenter().feed(blob)


def test_limits():
    with pytest.raises(FragmentError, match="exceeds"):
        Defragmenter(max_message_bytes=1000).feed(fragment(1, 0, b"x" * 1001, True, False))
    with pytest.raises(FragmentError, match="too many"):
        Defragmenter().feed(b"".join(fragment(i, 0, b"x", True, False) for i in range(1, 100)))
    assert MESSAGE_HEADER_BYTES == 40
