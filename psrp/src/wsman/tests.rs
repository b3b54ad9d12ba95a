//! Unit tests of the operations beyond what the recorded Windows exchanges hold: robust
//! connection headers, Disconnect bodies, paged enumerations, faults the recordings lack, and
//! parsing that must not depend on prefixes.

use std::time::Duration;

use uuid::Uuid;

use super::namespaces::{ADDRESSING, ENUMERATION, SHELL, SOAP, WSMAN, WSMV, action, resource};
use super::xml::{self, Element};
use super::*;

const SESSION: Uuid = Uuid::from_u128(0x934B94C5_4341_454E_825C_F118A365A283);
const SHELL_ID: Uuid = Uuid::from_u128(0xB2E1C91B_A3AA_41B4_B346_405E6A90005B);
const COMMAND_ID: Uuid = Uuid::from_u128(0x356E6DC2_6889_4305_9FE6_8B03F44D7210);

fn client() -> WsmanClient {
    WsmanClient::powershell("http://host:5985/wsman", "Microsoft.PowerShell", SESSION)
}

fn parsed(e: &Envelope) -> Element {
    xml::parse(&e.to_bytes()).unwrap()
}

fn header(root: &Element) -> &Element {
    root.child(SOAP, "Header").unwrap()
}

fn body(root: &Element) -> &Element {
    root.child(SOAP, "Body").unwrap()
}

#[test]
fn the_session_id_is_on_every_request() {
    let c = client();
    let all = [
        c.create(&CreatePowerShell::new(SHELL_ID, vec![1, 2, 3])),
        c.command(SHELL_ID, COMMAND_ID, &[4, 5]),
        c.send(SHELL_ID, "stdin", Some(COMMAND_ID), b"x"),
        c.receive(SHELL_ID, None),
        c.signal(SHELL_ID, Some(COMMAND_ID), &Signal::PsCtrlC),
        c.disconnect(SHELL_ID, Some(BufferMode::Block), Some(Duration::from_secs(60))),
        c.reconnect(SHELL_ID),
        c.connect(SHELL_ID, b"fragments"),
        c.connect_command(SHELL_ID, COMMAND_ID),
        c.enumerate_shells(),
        c.enumerate_commands(SHELL_ID),
        c.pull(resource::SHELLS, "ctx"),
        c.get_shell(SHELL_ID),
        c.get_config(),
        c.delete(SHELL_ID),
        c.acknowledge(Uuid::from_u128(7), 3),
    ];
    let mut message_ids = std::collections::HashSet::new();
    for e in &all {
        let root = parsed(e);
        let h = header(&root);
        assert_eq!(
            h.child_text(WSMV, "SessionId"),
            Some("uuid:934B94C5-4341-454E-825C-F118A365A283")
        );
        assert_eq!(h.child_text(ADDRESSING, "To"), Some("http://host:5985/wsman"));
        assert_eq!(h.child_text(ADDRESSING, "Action"), Some(e.action.as_str()));
        assert_eq!(h.child_text(WSMAN, "MaxEnvelopeSize"), Some("153600"));
        assert_eq!(h.child_text(WSMAN, "OperationTimeout"), Some("PT20S"));
        assert!(message_ids.insert(h.child_text(ADDRESSING, "MessageID").unwrap().to_string()));
    }
}

#[test]
fn signal_codes() {
    let c = client();
    let code = |s: &Signal| {
        let root = parsed(&c.signal(SHELL_ID, Some(COMMAND_ID), s));
        body(&root)
            .child(SHELL, "Signal")
            .unwrap()
            .child_text(SHELL, "Code")
            .unwrap()
            .to_string()
    };
    assert_eq!(code(&Signal::PsCtrlC), "powershell/signal/crtl_c");
    assert_eq!(
        code(&Signal::Terminate),
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate"
    );
}

#[test]
fn disconnect_body_follows_the_schema() {
    let c = client();
    let root = parsed(&c.disconnect(SHELL_ID, Some(BufferMode::Drop), Some(Duration::from_secs(3600))));
    let d = body(&root).child(SHELL, "Disconnect").unwrap();
    let names: Vec<_> = d.children.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["IdleTimeOut", "BufferMode"]);
    assert_eq!(d.child_text(SHELL, "IdleTimeOut"), Some("PT3600S"));
    assert_eq!(d.child_text(SHELL, "BufferMode"), Some("Drop"));
    let root = parsed(&c.disconnect(SHELL_ID, None, None));
    assert!(
        body(&root)
            .child(SHELL, "Disconnect")
            .unwrap()
            .children
            .is_empty()
    );
    let h = header(&root);
    let selector = h
        .child(WSMAN, "SelectorSet")
        .unwrap()
        .child(WSMAN, "Selector")
        .unwrap();
    assert_eq!(selector.attr("Name"), Some("ShellId"));
    assert_eq!(selector.text, "B2E1C91B-A3AA-41B4-B346-405E6A90005B");
}

#[test]
fn create_carries_idle_timeout_buffer_mode_and_options() {
    let mut create = CreatePowerShell::new(SHELL_ID, b"opening".to_vec());
    create.idle_timeout = Some(Duration::from_secs(600));
    create.buffer_mode = Some(BufferMode::Block);
    create.no_profile = true;
    let root = parsed(&client().create(&create));
    let shell = body(&root).child(SHELL, "Shell").unwrap();
    assert_eq!(
        shell.attr("ShellId"),
        Some("B2E1C91B-A3AA-41B4-B346-405E6A90005B")
    );
    let names: Vec<_> = shell.children.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "IdleTimeOut",
            "InputStreams",
            "OutputStreams",
            "BufferMode",
            "creationXml"
        ]
    );
    assert_eq!(shell.child_text(SHELL, "InputStreams"), Some("stdin pr"));
    let options: Vec<_> = header(&root)
        .child(WSMAN, "OptionSet")
        .unwrap()
        .children
        .iter()
        .map(|o| (o.attr("Name").unwrap(), o.attr("MustComply"), o.text.as_str()))
        .collect();
    assert_eq!(
        options,
        [
            ("protocolversion", Some("true"), "2.3"),
            ("WINRS_NOPROFILE", Some("true"), "TRUE")
        ]
    );
}

#[test]
fn robust_connection_headers() {
    let c = client();
    let op = Uuid::from_u128(0xABCDEF);
    let mut receive = c.receive(SHELL_ID, Some(COMMAND_ID));
    receive.operation_id = Some(OperationId::new(op));
    let root = parsed(&receive);
    let id = header(&root).child(WSMV, "OperationID").unwrap();
    assert_eq!(id.text, "uuid:00000000-0000-0000-0000-000000ABCDEF");
    assert_eq!(id.attr_ns(SOAP, "mustUnderstand"), Some("false"));
    assert_eq!(header(&root).child_text(WSMV, "SequenceId"), Some("1"));

    // After a network failure: the same request, same MessageID, OperationID mustUnderstand.
    let again = receive.retransmission().unwrap();
    assert_eq!(again.message_id, receive.message_id);
    let root = parsed(&again);
    let id = header(&root).child(WSMV, "OperationID").unwrap();
    assert_eq!(id.attr_ns(SOAP, "mustUnderstand"), Some("true"));
    assert_eq!(header(&root).child_text(WSMV, "SequenceId"), Some("1"));
    assert!(c.receive(SHELL_ID, None).retransmission().is_none());

    let ack = parsed(&c.acknowledge(op, 42));
    assert_eq!(
        header(&ack).child_text(WSMAN, "ResourceURI"),
        Some(resource::ROBUST_CONNECTION)
    );
    assert_eq!(
        header(&ack).child_text(ADDRESSING, "Action"),
        Some(action::ACKNOWLEDGE)
    );
    assert_eq!(body(&ack).child_text(WSMV, "LastSequenceIdReceived"), Some("42"));

    let response = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse</a:Action><p:OperationID s:mustUnderstand="false">uuid:00000000-0000-0000-0000-000000ABCDEF</p:OperationID><p:SequenceId>7</p:SequenceId></s:Header><s:Body><rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="356E6DC2-6889-4305-9FE6-8B03F44D7210">AAE=</rsp:Stream></rsp:ReceiveResponse></s:Body></s:Envelope>"#;
    let r = parse_receive_response(response).unwrap();
    assert_eq!(r.header.operation_id, Some(op));
    assert_eq!(r.header.sequence_id, Some(7));
    assert!(!r.header.acknowledge_requested());
    assert_eq!(r.body.streams[0].data, [0, 1]);
    // The schema's spelling of the header is read too.
    let schema_spelling = String::from_utf8_lossy(response).replace("SequenceId>", "SequenceID>");
    assert_eq!(
        parse_header(schema_spelling.as_bytes()).unwrap().sequence_id,
        Some(7)
    );

    let ack_request = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/wsman/AcknowledgeRequest</a:Action><p:OperationID>uuid:00000000-0000-0000-0000-000000ABCDEF</p:OperationID><p:SequenceId>9</p:SequenceId></s:Header><s:Body/></s:Envelope>"#;
    let h = parse_header(ack_request).unwrap();
    assert!(h.acknowledge_requested());
    assert!(matches!(
        parse_receive_response(ack_request),
        Err(WsmanError::UnexpectedAction { .. })
    ));

    // The server's Acknowledge on a retransmission, as in the example of MS-WSMV 4.11.3.
    let server_ack = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">
<s:Header>
<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>
<w:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/wsman/RobustConnection</w:ResourceURI>
<a:Action s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/wsman/Acknowledge</a:Action>
<a:MessageID>uuid:B4C2E4CA-9B86-463E-9C62-C02DEEB7BB58</a:MessageID>
<p:OperationID>uuid:AD3A70BC-E338-4410-AE86-23F9E1D70FBE</p:OperationID>
</s:Header>
<s:Body>
<p:LastSequenceIdReceived>1</p:LastSequenceIdReceived>
</s:Body>
</s:Envelope>"#;
    let ack = parse_acknowledge(server_ack).unwrap();
    assert_eq!(ack.body, 1);
    assert_eq!(
        ack.header.operation_id,
        Some(Uuid::from_u128(0xAD3A70BC_E338_4410_AE86_23F9E1D70FBE))
    );
}

#[test]
fn numbered_receive_and_its_echo() {
    let root = parsed(&client().receive_numbered(SHELL_ID, Some(COMMAND_ID), 3));
    let r = body(&root).child(SHELL, "Receive").unwrap();
    assert_eq!(r.attr("SequenceId"), Some("3"));
    assert!(
        parsed(&client().receive(SHELL_ID, None))
            .descendant(SHELL, "Receive")
            .unwrap()
            .attr("SequenceId")
            .is_none()
    );
    // The ReceiveResponse of the Custom Shell Receive example (MS-WSMV 4.8.4): the echo, streams
    // of stdout and stderr and two CommandStates, Pending then Done (the last one counts).
    let example = br#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">
<s:Header>
<wsa:Action>
http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse
</wsa:Action>
<wsa:MessageID>uuid:A4FEDB22-489D-42CD-8C1B-2110A79E47FD</wsa:MessageID>
</s:Header>
<s:Body>
<rsp:ReceiveResponse xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" SequenceId="0">
<rsp:Stream xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" Name="stdout">
SA==
</rsp:Stream>
<rsp:CommandState xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Pending">
<rsp:ExitCode>0</rsp:ExitCode>
</rsp:CommandState>
<rsp:Stream xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" Name="stderr" End="true">
</rsp:Stream>
<rsp:Stream xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" Name="stdout">
AGUAbABsAG8ALAAgAHcAbwByAGwAZAAhAA==
</rsp:Stream>
<rsp:CommandState xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done">
<rsp:ExitCode>0</rsp:ExitCode>
</rsp:CommandState>
</rsp:ReceiveResponse>
</s:Body>
</s:Envelope>"#;
    let r = parse_receive_response(example).unwrap().body;
    assert_eq!(r.sequence_id, Some(0));
    let names: Vec<_> = r
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.end, s.data.len()))
        .collect();
    assert_eq!(
        names,
        [("stdout", false, 1), ("stderr", true, 0), ("stdout", false, 25)]
    );
    assert_eq!(r.command_state.unwrap().state, CommandStateKind::Done);
}

#[test]
fn receive_is_parsed_by_namespace_not_prefix() {
    // Default namespaces, other prefixes, End and CommandState with an exit code.
    let response = br#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header><Action xmlns="http://schemas.xmlsoap.org/ws/2004/08/addressing">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse</Action></Header><Body><x:ReceiveResponse xmlns:x="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" SequenceID="0"><x:Stream Name="stdout" CommandId="356e6dc2-6889-4305-9fe6-8b03f44d7210" End="true">
        aGVs
        bG8=
    </x:Stream><x:Stream Name="stdout"></x:Stream><x:CommandState CommandId="356E6DC2-6889-4305-9FE6-8B03F44D7210" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><x:ExitCode>-1</x:ExitCode></x:CommandState></x:ReceiveResponse></Body></Envelope>"#;
    let r = parse_receive_response(response).unwrap().body;
    assert_eq!(r.streams.len(), 2);
    assert_eq!(r.streams[0].data, b"hello");
    assert!(r.streams[0].end);
    assert_eq!(r.streams[0].command_id, Some(COMMAND_ID));
    assert_eq!(r.streams[1].command_id, None);
    assert!(r.streams[1].data.is_empty());
    assert_eq!(r.sequence_id, Some(0));
    let state = r.command_state.as_ref().unwrap();
    assert_eq!(state.state, CommandStateKind::Done);
    assert_eq!(state.exit_code, Some(-1));
    assert!(r.is_done(Some(COMMAND_ID)));
    assert!(!r.is_done(Some(SHELL_ID)));

    let bad = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><rsp:ReceiveResponse xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><rsp:Stream Name="stdout">not base64!</rsp:Stream></rsp:ReceiveResponse></s:Body></s:Envelope>"#;
    assert!(matches!(
        parse_receive_response(bad),
        Err(WsmanError::Invalid {
            what: "rsp:Stream",
            ..
        })
    ));
}

fn fault(subcode: &str, code: u32, message: &str) -> Vec<u8> {
    format!(
        r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><env:Header><wsa:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</wsa:Action></env:Header><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>wsman:{subcode}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en-US">reason text</env:Text></env:Reason><env:Detail><wf:WSManFault xmlns:wf="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{code}" Machine="host"><wf:Message>{message}</wf:Message></wf:WSManFault></env:Detail></env:Fault></env:Body></env:Envelope>"#
    )
    .into_bytes()
}

#[test]
fn faults_by_cause() {
    let cases: [(&str, u32, &str, &str); 5] = [
        (
            "QuotaLimit",
            2_150_859_173,
            "This user is allowed a maximum number of 5 concurrent shells, which has been exceeded.",
            "QuotaExceeded",
        ),
        ("AccessDenied", 5, "Access is denied.", "AccessDenied"),
        (
            "InvalidParameter",
            2_150_859_250,
            "The WS-Management service cannot process the request because the IdleTimeout is out of bounds &lt;60000&gt;.",
            "InvalidIdleTimeout",
        ),
        (
            "InvalidSelectors",
            2_150_858_843,
            "The request for the Windows Remote Shell with ShellId failed because the shell was not found on the server.",
            "ShellNotFound",
        ),
        (
            "InternalError",
            1_726,
            "The remote procedure call failed.",
            "RemoteFault",
        ),
    ];
    for (subcode, code, message, reason) in cases {
        let bytes = fault(subcode, code, message);
        for err in [
            parse_create_response(&bytes).unwrap_err(),
            parse_receive_response(&bytes).unwrap_err(),
            parse_empty_response(&bytes, action::DISCONNECT_RESPONSE).unwrap_err(),
            parse_shells(&bytes).unwrap_err(),
        ] {
            let f = err.fault().unwrap_or_else(|| panic!("{err}"));
            assert_eq!(f.reason(), reason);
            assert_eq!(f.code(), Some(code));
            assert_eq!(f.detail().subcode.as_deref(), Some(subcode));
            assert_eq!(f.detail().machine.as_deref(), Some("host"));
            assert!(
                f.message().starts_with(&message[..message.len().min(15)]),
                "{}",
                f.message()
            );
            assert!(f.to_string().contains(&code.to_string()));
        }
    }
    let timeout = fault(
        "TimedOut",
        2_150_858_793,
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
    );
    assert!(
        parse_receive_response(&timeout)
            .unwrap_err()
            .is_operation_timeout()
    );
    let q = fault("QuotaLimit", 2_150_859_173, "max shells");
    assert!(!parse_header(&q).unwrap_err().is_operation_timeout());
    assert!(matches!(
        *parse_header(&q).unwrap_err().fault().unwrap(),
        Fault::QuotaLimit(_)
    ));
}

#[test]
fn create_response_with_resource_created_only() {
    let response = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse</a:Action></s:Header><s:Body><x:ResourceCreated><a:Address>http://host:5985/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/powershell/Microsoft.PowerShell</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">B2E1C91B-A3AA-41B4-B346-405E6A90005B</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated></s:Body></s:Envelope>"#;
    let shell = parse_create_response(response).unwrap().body;
    assert_eq!(shell, ShellInfo::with_id(SHELL_ID));
    assert!(!shell.is_powershell());
}

#[test]
fn paged_enumeration_pulls() {
    let first = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse</a:Action></s:Header><s:Body><n:EnumerateResponse><n:EnumerationContext>uuid:5E5F9A83-0B1B-4D8F-9D8A-0C1A2B3C4D5E</n:EnumerationContext><w:Items><rsp:Shell><rsp:ShellId>B2E1C91B-A3AA-41B4-B346-405E6A90005B</rsp:ShellId><rsp:Name>Runspace1</rsp:Name><rsp:State>Disconnected</rsp:State><rsp:BufferMode>Drop</rsp:BufferMode><rsp:IdleTimeOut>PT240.000S</rsp:IdleTimeOut><rsp:ShellInactivity>P0DT0H1M5S</rsp:ShellInactivity></rsp:Shell></w:Items></n:EnumerateResponse></s:Body></s:Envelope>"#;
    let page = parse_shells(first).unwrap().body;
    assert!(page.needs_pull());
    let shell = &page.items[0];
    assert_eq!(shell.name.as_deref(), Some("Runspace1"));
    assert_eq!(shell.state, Some(ShellState::Disconnected));
    assert_eq!(shell.buffer_mode, Some(BufferMode::Drop));
    assert_eq!(shell.idle_timeout, Some(Duration::from_secs(240)));
    assert_eq!(shell.shell_inactivity, Some(Duration::from_secs(65)));

    let pull = parsed(&client().pull(resource::SHELLS, page.context.as_deref().unwrap()));
    let p = body(&pull).child(ENUMERATION, "Pull").unwrap();
    assert_eq!(
        p.child_text(ENUMERATION, "EnumerationContext"),
        Some("uuid:5E5F9A83-0B1B-4D8F-9D8A-0C1A2B3C4D5E")
    );
    assert_eq!(
        header(&pull).child_text(WSMAN, "ResourceURI"),
        Some(resource::SHELLS)
    );

    let last = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse</a:Action></s:Header><s:Body><n:PullResponse><n:Items><rsp:Shell><rsp:ShellId>BCEF62AD-380E-4314-B2A4-EB6748019B41</rsp:ShellId><rsp:State>Connected</rsp:State></rsp:Shell></n:Items><n:EndOfSequence/></n:PullResponse></s:Body></s:Envelope>"#;
    let page = parse_shells(last).unwrap().body;
    assert!(!page.needs_pull() && page.end_of_sequence);
    assert_eq!(page.items[0].state, Some(ShellState::Connected));
}

#[test]
fn text_is_escaped_and_read_back() {
    let name = r#"a<b>&"c'"#;
    let c = client();
    let e = c.create_shell(
        CreateShellBody {
            name: Some(name.into()),
            input_streams: "stdin".into(),
            output_streams: "stdout stderr".into(),
            environment: vec![(name.into(), "]]> &amp; <![CDATA[".into())],
            ..CreateShellBody::default()
        },
        vec![WsOption::new("WINRS_CODEPAGE", "65001")],
    );
    let root = parsed(&e);
    let shell = body(&root).child(SHELL, "Shell").unwrap();
    assert_eq!(shell.child_text(SHELL, "Name"), Some(name));
    let var = shell
        .child(SHELL, "Environment")
        .unwrap()
        .child(SHELL, "Variable")
        .unwrap();
    assert_eq!(var.attr("Name"), Some(name));
    assert_eq!(var.text, "]]> &amp; <![CDATA[");
}

#[test]
fn payload_capacity_fills_the_envelope_exactly() {
    for size in [32_768u32, 153_600, 512_000] {
        let mut c = client();
        c.max_envelope_size = size;
        let capacity = c.max_send_payload(SHELL_ID);
        let full = c.send(SHELL_ID, "stdin", Some(COMMAND_ID), &vec![0x5a; capacity]);
        assert!(full.to_bytes().len() <= size as usize);
        assert!(
            full.to_bytes().len() > size as usize - 4,
            "{} of {size}",
            full.to_bytes().len()
        );
        let over = c.send(SHELL_ID, "stdin", Some(COMMAND_ID), &vec![0x5a; capacity + 1]);
        assert!(over.to_bytes().len() > size as usize);
    }
    let mut tiny = client();
    tiny.max_envelope_size = 100;
    assert_eq!(tiny.max_send_payload(SHELL_ID), 0);
}

#[test]
fn enumerate_pull_and_get_of_the_mswsmv_examples() {
    // MS-WSMV 4.7.6: an EnumerateResponse with only a context, then a PullResponse with the shell;
    // 4.7.7: a GetResponse. Ids as `uuid:` URIs and text wrapped in newlines, as there.
    let enumerate = b"<s:Envelope xml:lang=\"en-US\" xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" xmlns:wsen=\"http://schemas.xmlsoap.org/ws/2004/09/enumeration\" xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\">\n<s:Header>\n<wsa:Action >\nhttp://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse\n</wsa:Action>\n</s:Header>\n<s:Body>\n<wsen:EnumerateResponse>\n<wsen:EnumerationContext>\nuuid:F2EF0F83-D6E5-4F70-8E6B-D870551A5D9A\n</wsen:EnumerationContext>\n</wsen:EnumerateResponse>\n</s:Body>\n</s:Envelope>";
    let page = parse_shells(enumerate).unwrap().body;
    assert!(page.items.is_empty() && page.needs_pull());
    let pull = parsed(&client().pull(resource::SHELLS, page.context.as_deref().unwrap()));
    assert_eq!(
        pull.descendant(ENUMERATION, "EnumerationContext").unwrap().text,
        "uuid:F2EF0F83-D6E5-4F70-8E6B-D870551A5D9A"
    );
    let pulled = b"<s:Envelope xml:lang=\"en-US\" xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" xmlns:wsen=\"http://schemas.xmlsoap.org/ws/2004/09/enumeration\" xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\">\n<s:Header>\n<wsa:Action >\nhttp://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse\n</wsa:Action>\n</s:Header>\n<s:Body>\n<wsen:PullResponse>\n<wsen:Items>\n<rsp:Shell xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\">\n<rsp:ShellId>\nuuid:5B666291-0910-4E8F-B802-B697ACD7953D\n</rsp:ShellId>\n<rsp:Lifetime>PT28737.000S</rsp:Lifetime>\n<rsp:InputStreams>stdin</rsp:InputStreams>\n<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>\n<rsp:CommandLine>\n<rsp:Command>pause</rsp:Command>\n</rsp:CommandLine>\n</rsp:Shell>\n</wsen:Items>\n<wsen:EndOfSequence/>\n</wsen:PullResponse>\n</s:Body>\n</s:Envelope>";
    let page = parse_shells(pulled).unwrap().body;
    assert!(page.end_of_sequence && !page.needs_pull());
    let id = Uuid::from_u128(0x5B666291_0910_4E8F_B802_B697ACD7953D);
    assert_eq!(page.items[0].shell_id, id);
    assert_eq!(page.items[0].output_streams.as_deref(), Some("stdout stderr"));
    let get = b"<s:Envelope xml:lang=\"en-US\" xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" xmlns:wsman=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\">\n<s:Header>\n<wsa:Action>\nhttp://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse\n</wsa:Action>\n</s:Header>\n<s:Body>\n<rsp:Shell xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\">\n<rsp:ShellId>\nuuid:5B666291-0910-4E8F-B802-B697ACD7953D\n</rsp:ShellId>\n<rsp:Lifetime>PT27993.000S</rsp:Lifetime>\n</rsp:Shell>\n</s:Body>\n</s:Envelope>";
    assert_eq!(parse_get_shell_response(get).unwrap().body.shell_id, id);
}
