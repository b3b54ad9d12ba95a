"""WS-Management faults as Windows sends them: HTTP 500 with a SOAP 1.2 s:Fault whose s:Code/s:Subcode names the
DSP0226 fault (w:TimedOut, w:InvalidSelectors, ...), s:Reason the text, and s:Detail/f:WSManFault the Windows
error code (MS-WSMV 2.2.4.43 WSManFaultType, Code and Machine attributes, f:Message). Codes are Windows'
ERROR_WSMAN_* values (wsmerror.h), which clients such as pypsrp map to their exception types.

Where pypsrp's recorded exchanges with real Windows hosts (its sdist's tests/responses, e.g.
test_psrp_is_alive_invalid_selectors.yml, test_psrp_long_running_cmdlet.yml, test_psrp_is_alive_other_wsman_error.yml)
show a fault, its texts, w:FaultDetail and nested f:ProviderFault are copied here.
"""

from __future__ import annotations

import socket
import typing
import xml.etree.ElementTree as ElementTree

from psrp_peer.wsman.soap import NS, envelope, q

FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ADDRESSING_FAULT_ACTION = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
MACHINE = socket.gethostname()

# ERROR_WSMAN_* codes (wsmerror.h)
OPERATION_TIMEOUT = 2150858793  # 0x80338029
INVALID_SELECTORS = 2150858843  # 0x8033805B, ERROR_WSMAN_INVALID_SELECTORS (the shell does not exist)
QUOTA_MAX_SHELLS = 2150859173  # 0x803381A5
ACCESS_DENIED = 5  # ERROR_ACCESS_DENIED, as Windows reports it in WSManFault/@Code
ACTION_NOT_SUPPORTED = 2150858754  # 0x80338002
INVALID_PARAMETER = 87  # ERROR_INVALID_PARAMETER


class WSManFault(Exception):
    def __init__(self, code: str, subcode: str, wsman_code: int, message: str, *,
                 addressing: bool = False, detail: typing.Optional[str] = None,
                 provider: typing.Optional[typing.Tuple[str, str]] = None,
                 detail_message: typing.Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code  # s:Sender or s:Receiver
        self.subcode = subcode  # e.g. w:TimedOut
        self.wsman_code = wsman_code
        self.message = message
        self.addressing = addressing
        self.detail = detail  # w:FaultDetail URI
        self.provider = provider  # (provider, path) of an f:ProviderFault wrapping the message
        self.detail_message = detail_message or message  # f:Message; Windows sometimes says more there

    def envelope(self, relates_to: typing.Optional[str], extra_headers: typing.Sequence[ElementTree.Element] = ()
                 ) -> ElementTree.Element:
        fault = ElementTree.Element(q("s:Fault"))
        code = ElementTree.SubElement(fault, q("s:Code"))
        ElementTree.SubElement(code, q("s:Value")).text = self.code
        subcode = ElementTree.SubElement(code, q("s:Subcode"))
        ElementTree.SubElement(subcode, q("s:Value")).text = self.subcode
        reason = ElementTree.SubElement(fault, q("s:Reason"))
        ElementTree.SubElement(reason, q("s:Text"), {q("xml:lang"): "en-US"}).text = self.message
        detail = ElementTree.SubElement(fault, q("s:Detail"))
        if self.detail:
            ElementTree.SubElement(detail, q("wsman:FaultDetail")).text = self.detail
        wsman_fault = ElementTree.SubElement(detail, q("wsmanfault:WSManFault"),
                                             {"Code": str(self.wsman_code), "Machine": MACHINE})
        message = ElementTree.SubElement(wsman_fault, q("wsmanfault:Message"))
        if self.provider is None:
            message.text = self.detail_message
        else:
            provider = ElementTree.SubElement(message, q("wsmanfault:ProviderFault"),
                                              {"provider": self.provider[0], "path": self.provider[1]})
            inner = ElementTree.SubElement(provider, q("wsmanfault:WSManFault"),
                                           {"Code": str(self.wsman_code), "Machine": MACHINE})
            ElementTree.SubElement(inner, q("wsmanfault:Message")).text = self.detail_message
        root = envelope(ADDRESSING_FAULT_ACTION if self.addressing else FAULT_ACTION, relates_to, fault, extra_headers)
        # The subcode prefixes must resolve in the document: w: is the DMTF wsman namespace, wsa: addressing.
        root.set("xmlns:w", NS["wsman"])
        return root


def timed_out() -> WSManFault:
    return WSManFault("s:Receiver", "w:TimedOut", OPERATION_TIMEOUT,
                      "The WS-Management service cannot complete the operation within the time specified in "
                      "OperationTimeout.  ")


INVALID_SELECTORS_TEXT = ("The WS-Management service cannot process the request because the request contained "
                          "invalid selectors for the resource. ")


def shell_not_found() -> WSManFault:
    """What Windows answers for a ShellId it does not have (or no longer has); its text names no id."""
    return WSManFault("s:Sender", "w:InvalidSelectors", INVALID_SELECTORS, INVALID_SELECTORS_TEXT,
                      detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
                      provider=("Shell provider", "%systemroot%\\system32\\WsmSvc.dll"))


def quota_max_shells(limit: int) -> WSManFault:
    return WSManFault("s:Sender", "w:QuotaLimit", QUOTA_MAX_SHELLS,
                      f"The WS-Management service cannot process the request. This user is allowed a maximum number "
                      f"of {limit} shells, which has been exceeded. Reduce the number of shells or increase the "
                      "quota limit. For more information, see the about_Remote_Troubleshooting Help topic.")


def access_denied() -> WSManFault:
    return WSManFault("s:Sender", "w:AccessDenied", ACCESS_DENIED, "Access is denied.")


def action_not_supported(action: str) -> WSManFault:
    return WSManFault("s:Sender", "wsa:ActionNotSupported", ACTION_NOT_SUPPORTED,
                      f"The action {action[:200]} is not supported by the service.", addressing=True)


INVALID_HEADER = 2150858767  # 0x8033800F, with the reason text Windows gives


def invalid_header(message: str) -> WSManFault:
    """wsa:InvalidMessageInformationHeader: a bad SOAP header (e.g. an OperationTimeout Windows cannot read), and
    OperationID/SequenceID misuse (MS-WSMV 3.1.4.1.39)."""
    return WSManFault("s:Sender", "wsa:InvalidMessageInformationHeader", INVALID_HEADER,
                      "The WS-Management service cannot process the request. The request contains one or more "
                      "invalid SOAP headers. ", addressing=True, detail_message=message)


def schema_error(message: str) -> WSManFault:
    return WSManFault("s:Sender", "w:SchemaValidationError", INVALID_PARAMETER,
                      f"The SOAP XML in the message does not match the corresponding XML schema definition: "
                      f"{message[:300]}")


def invalid_parameter(message: str) -> WSManFault:
    """A value the operation cannot take, shaped as Windows' w:InvalidParameter (FaultDetail InvalidValue, code
    87) in pypsrp's test_winrs_fail_poll_process.yml recording."""
    return WSManFault("s:Sender", "w:InvalidParameter", INVALID_PARAMETER, message,
                      detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue")


def internal_error(message: str) -> WSManFault:
    return WSManFault("s:Receiver", "w:InternalError", INVALID_PARAMETER, message)
