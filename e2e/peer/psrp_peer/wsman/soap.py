"""SOAP 1.2 envelopes of WS-Management (DSP0226) with Microsoft's extensions (MS-WSMV 2.2.1 namespaces): reading
the request headers the peer uses, and writing responses and faults the way Windows writes them.
"""

from __future__ import annotations

import dataclasses
import re
import typing
import uuid
import xml.etree.ElementTree as ElementTree

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wsen": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ElementTree.register_namespace(_prefix, _uri)

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_DURATION = re.compile(r"^PT(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,12})(?:\.(\d{1,9}))?S)?$")


def q(prefixed: str) -> str:
    """'rsp:Shell' -> '{http://...shell}Shell'."""
    prefix, local = prefixed.split(":", 1)
    return "{%s}%s" % (NS[prefix], local)


class BadEnvelope(ValueError):
    """Not a WS-Management request the peer can read (answered with a wsa/wsman fault, not a crash)."""


class BadHeader(BadEnvelope):
    """A SOAP header the peer cannot use: Windows answers wsa:InvalidMessageInformationHeader."""

    def __init__(self, message: str, message_id: typing.Optional[str] = None) -> None:
        super().__init__(message)
        self.message_id = message_id  # for the fault's wsa:RelatesTo, when the request had one


def parse_duration(text: typing.Optional[str]) -> typing.Optional[float]:
    """xs:duration as WS-Management clients send it (PT60S, PT60.000S, PT1M30S, PT2H) -> seconds."""
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if match is None or not any(match.groups()):
        raise BadEnvelope(f"bad duration {text[:40]!r}")
    hours, minutes, seconds, fraction = match.groups()
    value = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
    return value + (float("0." + fraction) if fraction else 0.0)


def format_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


@dataclasses.dataclass
class Request:
    action: str
    message_id: str
    resource_uri: str
    to: str
    body: ElementTree.Element
    selectors: typing.Dict[str, str]
    options: typing.Dict[str, str]
    operation_timeout: typing.Optional[float]
    max_envelope_size: typing.Optional[int]
    session_id: typing.Optional[str]
    operation_id: typing.Optional[str]  # MS-WSMV 3.1.4.1.39: robust connection support when present
    operation_retransmit: bool  # its mustUnderstand="true": a retransmission of an earlier request
    sequence_id: typing.Optional[int]
    locale: str = "en-US"


def _text(element: typing.Optional[ElementTree.Element]) -> typing.Optional[str]:
    return None if element is None else (element.text or "").strip()


def _true(value: typing.Optional[str]) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def parse_request(data: bytes) -> Request:
    # No DTDs or entity declarations: nothing a client sends is ever expanded by the parser.
    if b"<!" in data:
        raise BadEnvelope("DTDs, entities and comments are not accepted")
    try:
        envelope = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise BadEnvelope(f"not XML: {e}") from None
    if envelope.tag != q("s:Envelope"):
        raise BadEnvelope(f"root element {envelope.tag[:80]!r} is not a SOAP 1.2 Envelope")
    header = envelope.find("s:Header", NS)
    body = envelope.find("s:Body", NS)
    if header is None or body is None:
        raise BadEnvelope("envelope without Header or Body")
    action = _text(header.find("wsa:Action", NS))
    message_id = _text(header.find("wsa:MessageID", NS))
    if not action or not message_id:
        raise BadHeader("wsa:Action and wsa:MessageID are required. ")
    selectors = {}
    for selector in header.findall("wsman:SelectorSet/wsman:Selector", NS):
        selectors[selector.attrib.get("Name", "")] = (selector.text or "").strip()
    options = {}
    for option in header.findall("wsman:OptionSet/wsman:Option", NS):
        options[option.attrib.get("Name", "")] = (option.text or "").strip()
    max_envelope = _text(header.find("wsman:MaxEnvelopeSize", NS))
    operation_id = header.find("wsmv:OperationID", NS)
    sequence_id = _text(header.find("wsmv:SequenceID", NS))
    locale = header.find("wsman:Locale", NS)
    timeout_text = _text(header.find("wsman:OperationTimeout", NS))
    try:
        operation_timeout = parse_duration(timeout_text)
    except BadEnvelope:
        raise BadHeader(f"The XML contains an invalid timeout field in the SOAP header: {timeout_text[:40]}. ",
                        message_id) from None
    try:
        return Request(
            action=action,
            message_id=message_id,
            resource_uri=_text(header.find("wsman:ResourceURI", NS)) or "",
            to=_text(header.find("wsa:To", NS)) or "",
            body=body,
            selectors=selectors,
            options=options,
            operation_timeout=operation_timeout,
            max_envelope_size=int(max_envelope) if max_envelope else None,
            session_id=_text(header.find("wsmv:SessionId", NS)),
            operation_id=_text(operation_id),
            operation_retransmit=operation_id is not None and _true(operation_id.attrib.get(q("s:mustUnderstand"))),
            sequence_id=int(sequence_id) if sequence_id else None,
            locale=(locale.attrib.get(q("xml:lang")) if locale is not None else None) or "en-US",
        )
    except ValueError as e:  # MaxEnvelopeSize or SequenceID that is not a number
        raise BadHeader(f"The request contains an invalid SOAP header value: {str(e)[:100]}. ", message_id) from None


def envelope(action: str, relates_to: typing.Optional[str], body: typing.Optional[ElementTree.Element] = None,
             extra_headers: typing.Sequence[ElementTree.Element] = ()) -> ElementTree.Element:
    # The header as Windows writes it (pypsrp's recorded exchanges): Action, MessageID, ActivityId (MS-WSMV
    # 3.1.4.1.12, a trace id), To, RelatesTo.
    root = ElementTree.Element(q("s:Envelope"), {q("xml:lang"): "en-US"})
    header = ElementTree.SubElement(root, q("s:Header"))
    ElementTree.SubElement(header, q("wsa:Action")).text = action
    ElementTree.SubElement(header, q("wsa:MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ElementTree.SubElement(header, q("wsmv:ActivityId")).text = str(uuid.uuid4()).upper()
    ElementTree.SubElement(header, q("wsa:To")).text = ANONYMOUS
    if relates_to:
        ElementTree.SubElement(header, q("wsa:RelatesTo")).text = relates_to
    for element in extra_headers:
        header.append(element)
    body_element = ElementTree.SubElement(root, q("s:Body"))
    if body is not None:
        body_element.append(body)
    return root


def serialize(root: ElementTree.Element) -> bytes:
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)


def header_element(name: str, text: str, must_understand: typing.Optional[bool] = None) -> ElementTree.Element:
    attrib = {} if must_understand is None else {q("s:mustUnderstand"): "true" if must_understand else "false"}
    element = ElementTree.Element(q(name), attrib)
    element.text = text
    return element
