//! Properties of the WS-Management layer: no parser panics on remote data (arbitrary bytes,
//! XML-like token soup, mutated real envelopes), and what the builders write reads back the same.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use psrp::wsman::namespaces::{SHELL, SOAP, action, resource};
use psrp::wsman::{self, CreatePowerShell, CreateShellBody, Signal, WsmanClient, xml};
use uuid::Uuid;

/// Every parser of the layer, fed the same bytes; none may panic.
fn parse_all(bytes: &[u8]) {
    let _ = xml::parse(bytes);
    let _ = wsman::parse_header(bytes);
    let _ = wsman::parse_create_response(bytes);
    let _ = wsman::parse_command_response(bytes);
    let _ = wsman::parse_receive_response(bytes);
    let _ = wsman::parse_connect_response(bytes);
    let _ = wsman::parse_get_shell_response(bytes);
    let _ = wsman::parse_config_max_envelope_size(bytes);
    let _ = wsman::parse_shells(bytes);
    let _ = wsman::parse_commands(bytes);
    let _ = wsman::parse_empty_response(bytes, action::DELETE_RESPONSE);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = wsman::duration::parse(text);
        let _ = wsman::parse_uuid(text);
    }
}

const RECEIVE: &str = r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse</a:Action><a:MessageID>uuid:6D9B5FDE-61EC-4CEF-B7E5-15FA881C90CC</a:MessageID><p:OperationID>uuid:6D9B5FDE-61EC-4CEF-B7E5-15FA881C90CD</p:OperationID><p:SequenceID>2</p:SequenceID></s:Header><s:Body><rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="356E6DC2-6889-4305-9FE6-8B03F44D7210">AAAAAAAAAAkAAAAAAAAAAAMAAAA=</rsp:Stream><rsp:CommandState CommandId="356E6DC2-6889-4305-9FE6-8B03F44D7210" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"><rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse></s:Body></s:Envelope>"#;

const ENUMERATE: &str = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse</a:Action></s:Header><s:Body><n:EnumerateResponse><n:EnumerationContext></n:EnumerationContext><w:Items><rsp:Shell><rsp:ShellId>BCEF62AD-380E-4314-B2A4-EB6748019B41</rsp:ShellId><rsp:Owner>WIN\vagrant</rsp:Owner><rsp:ProcessId>964</rsp:ProcessId><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Disconnected</rsp:State><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ChildProcesses>0</rsp:ChildProcesses></rsp:Shell></w:Items><w:EndOfSequence/></n:EnumerateResponse></s:Body></s:Envelope>"#;

const FAULT: &str = r#"<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidSelectors</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">invalid selectors</s:Text></s:Reason><s:Detail><w:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors</w:FaultDetail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858843" Machine="127.0.0.1"><f:Message><f:ProviderFault provider="Shell provider" path="%systemroot%\system32\WsmSvc.dll"><f:WSManFault Code="2150858843" Machine="127.0.0.1"><f:Message>not found</f:Message></f:WSManFault></f:ProviderFault></f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#;

/// Pieces of WS-Management envelopes, to make token soup that gets past the first tag.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">"#.to_string()),
        Just("</s:Envelope>".to_string()),
        Just("<s:Header>".to_string()),
        Just("</s:Header>".to_string()),
        Just("<s:Body>".to_string()),
        Just("</s:Body>".to_string()),
        Just("<rsp:ReceiveResponse>".to_string()),
        Just("</rsp:ReceiveResponse>".to_string()),
        Just(r#"<rsp:Stream Name="stdout" CommandId="356E6DC2-6889-4305-9FE6-8B03F44D7210" End="true">"#.to_string()),
        Just(r#"<rsp:Stream Name="stdout" CommandId="zz" End="maybe">"#.to_string()),
        Just("</rsp:Stream>".to_string()),
        Just(r#"<rsp:CommandState State="x/Done" CommandId="">"#.to_string()),
        Just("</rsp:CommandState>".to_string()),
        Just("<rsp:ExitCode>99999999999999999999999</rsp:ExitCode>".to_string()),
        Just("<rsp:Shell>".to_string()),
        Just("</rsp:Shell>".to_string()),
        Just("<rsp:ShellId>B2E1C91B-A3AA-41B4-B346-405E6A90005B</rsp:ShellId>".to_string()),
        Just("<rsp:IdleTimeOut>PT99999999999999999999.5S</rsp:IdleTimeOut>".to_string()),
        Just("<rsp:ShellRunTime>P1Y</rsp:ShellRunTime>".to_string()),
        Just("<rsp:BufferMode>Sometimes</rsp:BufferMode>".to_string()),
        Just("<rsp:ProcessId>-1</rsp:ProcessId>".to_string()),
        Just("<n:EnumerateResponse>".to_string()),
        Just("</n:EnumerateResponse>".to_string()),
        Just("<w:Items>".to_string()),
        Just("</w:Items>".to_string()),
        Just("<w:EndOfSequence/>".to_string()),
        Just("<s:Fault>".to_string()),
        Just("</s:Fault>".to_string()),
        Just("<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>".to_string()),
        Just(r#"<f:WSManFault Code="4294967296" Machine="m"><f:Message>"#.to_string()),
        Just("</f:Message></f:WSManFault>".to_string()),
        Just("<a:Action>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse</a:Action>".to_string()),
        Just("<p:SequenceID>18446744073709551616</p:SequenceID>".to_string()),
        Just("<p:OperationID>uuid:nope</p:OperationID>".to_string()),
        Just("&amp;".to_string()),
        Just("&#0;".to_string()),
        Just("&#xD800;".to_string()),
        Just("&#x110000;".to_string()),
        Just("&undefined;".to_string()),
        Just("<![CDATA[<rsp:Stream>]]>".to_string()),
        Just("<!-- c -->".to_string()),
        Just("<?pi x?>".to_string()),
        Just("<u:x xmlns:u=\"\">".to_string()),
        Just("<q:y>".to_string()),
        "[ -~]{0,12}",
        "[A-Za-z0-9+/=]{0,16}",
    ]
}

fn mutate(base: &str, at: usize, op: u8, piece: &str) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    let at = at % (bytes.len() + 1);
    match op % 4 {
        0 => bytes.truncate(at),
        1 => {
            if at < bytes.len() {
                bytes[at] = piece.bytes().next().unwrap_or(0);
            }
        }
        2 => {
            let tail = bytes.split_off(at);
            bytes.extend_from_slice(piece.as_bytes());
            bytes.extend_from_slice(&tail);
        }
        _ => {
            let end = (at + piece.len()).min(bytes.len());
            bytes.drain(at..end);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        parse_all(&bytes);
    }

    #[test]
    fn token_soup_never_panics(tokens in proptest::collection::vec(token(), 0..48)) {
        parse_all(tokens.concat().as_bytes());
    }

    #[test]
    fn mutated_envelopes_never_panic(which in 0usize..3, at in any::<usize>(), op in any::<u8>(), piece in token()) {
        let base = [RECEIVE, ENUMERATE, FAULT][which];
        parse_all(&mutate(base, at, op, &piece));
    }

    #[test]
    fn text_round_trips(
        name in "\\PC{0,40}",
        value in "\\PC{0,40}",
        command in "\\PC{0,40}",
        endpoint in "\\PC{0,40}",
    ) {
        let mut c = WsmanClient::powershell(endpoint.clone(), "Microsoft.PowerShell", Uuid::from_u128(1));
        c.resource_uri = resource::CMD.to_string();
        let shell = c.create_shell(
            CreateShellBody {
                name: Some(name.clone()),
                input_streams: "stdin".into(),
                output_streams: "stdout stderr".into(),
                environment: vec![(name.clone(), value.clone())],
                ..CreateShellBody::default()
            },
            Vec::new(),
        );
        let root = xml::parse(&shell.to_bytes()).unwrap();
        let header = root.child(SOAP, "Header").unwrap();
        prop_assert_eq!(&header.child(psrp::wsman::namespaces::ADDRESSING, "To").unwrap().text, &endpoint);
        let s = root.child(SOAP, "Body").unwrap().child(SHELL, "Shell").unwrap();
        prop_assert_eq!(&s.child(SHELL, "Name").unwrap().text, &name);
        let var = s.child(SHELL, "Environment").unwrap().child(SHELL, "Variable").unwrap();
        prop_assert_eq!(var.attr("Name"), Some(name.as_str()));
        prop_assert_eq!(&var.text, &value);

        let cmd = c.command_line(Uuid::from_u128(2), None, &command, vec![value.clone()]);
        let root = xml::parse(&cmd.to_bytes()).unwrap();
        let line = root.child(SOAP, "Body").unwrap().child(SHELL, "CommandLine").unwrap();
        prop_assert_eq!(&line.child(SHELL, "Command").unwrap().text, &command);
        prop_assert_eq!(&line.child(SHELL, "Arguments").unwrap().text, &value);
    }

    #[test]
    fn payloads_round_trip(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        shell in any::<u128>(),
        command in any::<u128>(),
        secs in 0u64..10_000_000,
        millis in 0u32..1000,
    ) {
        let c = WsmanClient::powershell("http://h:5985/wsman", "JEA Role & <x>", Uuid::from_u128(shell));
        let (shell, command) = (Uuid::from_u128(shell), Uuid::from_u128(command));
        let mut create = CreatePowerShell::new(shell, data.clone());
        create.idle_timeout = Some(Duration::from_secs(secs) + Duration::from_millis(u64::from(millis)));
        let root = xml::parse(&c.create(&create).to_bytes()).unwrap();
        let s = root.child(SOAP, "Body").unwrap().child(SHELL, "Shell").unwrap();
        prop_assert_eq!(wsman::parse_uuid(s.attr("ShellId").unwrap()), Some(shell));
        let xml_text = &s.child(psrp::wsman::namespaces::POWERSHELL, "creationXml").unwrap().text;
        prop_assert_eq!(BASE64.decode(xml_text).unwrap(), data.clone());
        prop_assert_eq!(
            wsman::duration::parse(s.child_text(SHELL, "IdleTimeOut").unwrap()),
            create.idle_timeout
        );

        let send = c.send(shell, "pr", Some(command), &data);
        let root = xml::parse(&send.to_bytes()).unwrap();
        let stream = root.child(SOAP, "Body").unwrap().child(SHELL, "Send").unwrap().child(SHELL, "Stream").unwrap();
        prop_assert_eq!(wsman::parse_uuid(stream.attr("CommandId").unwrap()), Some(command));
        prop_assert_eq!(BASE64.decode(&stream.text).unwrap(), data);

        let signal = c.signal(shell, Some(command), &Signal::Code("x<&>\"y".into()));
        let root = xml::parse(&signal.to_bytes()).unwrap();
        let code = root.child(SOAP, "Body").unwrap().child(SHELL, "Signal").unwrap().child_text(SHELL, "Code");
        prop_assert_eq!(code, Some("x<&>\"y"));
    }
}
