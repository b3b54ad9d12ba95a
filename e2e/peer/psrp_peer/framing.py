"""The out-of-process transport's packets: what `pwsh -s` / `pwsh -sshs` read and write on stdio.

Not part of MS-PSRP (which specifies WS-Management as its transport); PowerShell defines it in its source,
src/System.Management.Automation/engine/remoting/fanin/OutOfProcTransportManager.cs (OutOfProcessUtils) and
.../remoting/server/OutOfProcServerMediator.cs. One XML element per line:

    <Data Stream='Default|PromptResponse' PSGuid='...'>base64 PSRP fragments</Data>
    <DataAck|Command|CommandAck|Signal|SignalAck|Close|CloseAck PSGuid='...' />

PSGuid is the pipeline id, or the empty GUID for the runspace pool.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import typing
import uuid
import xml.etree.ElementTree as ElementTree

from psrpcore import StreamType

EMPTY_GUID = uuid.UUID(int=0)
CLIENT_TAGS = frozenset({"Data", "Command", "Signal", "Close"})
SERVER_TAGS = frozenset({"DataAck", "CommandAck", "SignalAck", "CloseAck"})


class FramingError(ValueError):
    """A line that is not an out-of-process packet."""


@dataclasses.dataclass(frozen=True)
class Packet:
    tag: str
    guid: typing.Optional[uuid.UUID]  # None: the runspace pool
    stream: StreamType = StreamType.default
    data: bytes = b""


def parse_packet(line: bytes) -> Packet:
    # Entities and DTDs have no business in these packets; refusing them up front keeps the XML parser
    # from ever expanding anything a client sends.
    if b"<!" in line:
        raise FramingError("DTDs and entities are not accepted")
    try:
        element = ElementTree.fromstring(line)
    except ElementTree.ParseError as e:
        raise FramingError(f"not an XML packet: {e}") from None
    tag = element.tag
    if tag not in CLIENT_TAGS and tag not in SERVER_TAGS:
        raise FramingError(f"unknown packet element <{tag[:40]}>")
    if len(element):
        raise FramingError(f"<{tag}> has child elements")
    try:
        guid = uuid.UUID(element.attrib["PSGuid"])
    except KeyError:
        raise FramingError(f"<{tag}> without PSGuid") from None
    except ValueError:
        raise FramingError(f"<{tag}> with a malformed PSGuid") from None
    text = (element.text or "").strip()
    stream = StreamType.default
    data = b""
    if tag == "Data":
        stream_name = element.attrib.get("Stream", "Default").lower()
        if stream_name == "promptresponse":
            stream = StreamType.prompt_response
        elif stream_name != "default":
            raise FramingError(f"<Data> with unknown Stream {stream_name[:40]!r}")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FramingError("<Data> payload is not base64") from None
    elif text:
        raise FramingError(f"<{tag}> carries text")
    return Packet(tag, None if guid == EMPTY_GUID else guid, stream, data)


def data_packet(data: bytes, guid: typing.Optional[uuid.UUID], stream: StreamType = StreamType.default) -> bytes:
    name = b"PromptResponse" if stream == StreamType.prompt_response else b"Default"
    return b"<Data Stream='%s' PSGuid='%s'>%s</Data>\n" % (name, str(guid or EMPTY_GUID).encode(),
                                                        base64.b64encode(data))


def guid_packet(tag: str, guid: typing.Optional[uuid.UUID]) -> bytes:
    return b"<%s PSGuid='%s' />\n" % (tag.encode(), str(guid or EMPTY_GUID).encode())
