//! The XML namespaces, action URIs and resource URIs of WS-Management and its Windows extensions.
//!
//! Parsers match on these namespace URIs, never on prefixes: Windows answers with its own prefixes
//! (`a:`, `w:`, `p:`, `x:`, `n:`, `f:`), other servers with others (MS-WSMV 2.2.1 lists the URIs).

/// SOAP 1.2 envelope (`s:`).
pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing, the August 2004 submission WS-Management uses (`wsa:`).
pub const ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// DMTF WS-Management (`wsman:`).
pub const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
/// Microsoft's WS-Management extensions (`wsmv:`; MS-WSMV 2.2.1): SessionId, DataLocale,
/// OperationID, SequenceID, the Acknowledge body.
pub const WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
/// WinRS, the Remote Shell protocol (`rsp:`; MS-WSMV 2.2.4.37 and neighbours).
pub const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// WS-Transfer (`wst:`): the body of a CreateResponse.
pub const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
/// WS-Enumeration (`wsen:`).
pub const ENUMERATION: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration";
/// The `WSManFault` detail of a SOAP fault (`f:`; MS-WSMV 2.2.4.43).
pub const WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
/// PowerShell's own elements in shell bodies: `creationXml`, `connectXml`, `connectResponseXml`
/// (MS-PSRP 3.1.5.3.1, 3.1.5.3.14, 3.1.5.3.15).
pub const POWERSHELL: &str = "http://schemas.microsoft.com/powershell";
/// The WS-Management configuration (`cfg:`): the answer to a Get of [`resource::CONFIG`].
pub const CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
/// The `xml:` prefix's namespace (`xml:lang`).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Action URIs of requests and their responses.
pub mod action {
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    pub const CREATE_RESPONSE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse";
    pub const GET: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
    pub const GET_RESPONSE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse";
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    pub const DELETE_RESPONSE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse";
    pub const ENUMERATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate";
    pub const ENUMERATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse";
    pub const PULL: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull";
    pub const PULL_RESPONSE: &str = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse";
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    pub const COMMAND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse";
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    pub const SEND_RESPONSE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse";
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    pub const RECEIVE_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse";
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    pub const SIGNAL_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse";
    pub const DISCONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Disconnect";
    pub const DISCONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/DisconnectResponse";
    pub const RECONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Reconnect";
    pub const RECONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReconnectResponse";
    pub const CONNECT: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Connect";
    pub const CONNECT_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ConnectResponse";
    /// The client's acknowledgement of robust-connection responses (MS-WSMV 3.1.4.18).
    pub const ACKNOWLEDGE: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman/Acknowledge";
    /// The server asks for an [`ACKNOWLEDGE`] when its cache of responses is full (MS-WSMV 3.1.6.6).
    pub const ACKNOWLEDGE_REQUEST: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/wsman/AcknowledgeRequest";
    /// The action of a WS-Management fault (Windows also uses the WS-Addressing fault action).
    pub const FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
    pub const ADDRESSING_FAULT: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";
}

/// Resource URIs.
pub mod resource {
    /// The prefix of a PowerShell session configuration's resource URI; the configuration name
    /// (`Microsoft.PowerShell`, a JEA endpoint's name) follows.
    pub const POWERSHELL_PREFIX: &str = "http://schemas.microsoft.com/powershell/";
    /// All shells of the user, for Enumerate and Get of a shell (MS-WSMV 3.1.4.8.2).
    pub const SHELLS: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
    /// The commands of a shell, for Enumerate with a ShellId selector filter.
    pub const COMMANDS: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    /// The text-based command shell (`cmd.exe`; the winrs shell).
    pub const CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
    /// The service configuration (its `MaxEnvelopeSizekb`).
    pub const CONFIG: &str = "http://schemas.microsoft.com/wbem/wsman/1/config";
    /// Robust-connection acknowledgements (MS-WSMV 3.1.4.18).
    pub const ROBUST_CONNECTION: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman/RobustConnection";

    /// The resource URI of a PowerShell session configuration.
    pub fn powershell(configuration_name: &str) -> String {
        format!("{POWERSHELL_PREFIX}{configuration_name}")
    }
}

/// Signal codes (MS-WSMV 2.2.4.38).
pub mod signal {
    /// PowerShell's stop of a pipeline: the value MS-PSRP 3.1.5.3.9 requires (sic).
    pub const PS_CTRL_C: &str = "powershell/signal/crtl_c";
    /// The same signal as MS-WSMV 2.2.4.38 spells it, and pypsrp sends it.
    pub const PS_CTRL_C_WSMV: &str = "powershell/signal/ctrl_c";
    pub const CTRL_C: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c";
    pub const CTRL_BREAK: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_break";
    /// Releases a finished command's state on the server.
    pub const TERMINATE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate";
}

/// The anonymous reply address every request names in `wsa:ReplyTo`.
pub const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// The selector filter dialect of an Enumerate of a shell's commands.
pub const SELECTOR_FILTER: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter";
