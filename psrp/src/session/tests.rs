//! The facade against a scripted out-of-process server on an in-memory pipe: packet order, acks,
//! host calls, whole-fragment packets, flow control, timeouts, failures and cancellation.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf},
    time::timeout,
};

use super::*;
use crate::{
    clixml::{self, ObjContent},
    fragment::{Defragmenter, FragmentHeader, Fragmenter, HEADER_LEN},
    message::{Destination, Message, MessageType},
    transport::outofproc::{Packet, Stream as DataStream},
};

const STEP: Duration = Duration::from_secs(5);

/// The server's end of the pipe, speaking the out-of-process framing by hand.
struct Server {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
    defragmenter: Defragmenter,
    fragmenter: Fragmenter,
    pool: Uuid,
}

impl Server {
    fn new(stream: DuplexStream) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Server {
            reader: BufReader::new(reader),
            writer,
            defragmenter: Defragmenter::new(),
            fragmenter: Fragmenter::new(),
            pool: Uuid::nil(),
        }
    }

    /// The next packet, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Packet> {
        let mut line = String::new();
        let n = timeout(STEP, self.reader.read_line(&mut line))
            .await
            .expect("a packet in time")
            .ok()?;
        (n > 0).then(|| Packet::parse_line(line.trim_end().as_bytes()).expect("a valid packet"))
    }

    async fn expect(&mut self, kind: PacketKind, pipeline: Option<Uuid>) -> Packet {
        let packet = self.next().await.expect("a packet, not the end");
        assert_eq!(
            (packet.kind(), packet.pipeline_id()),
            (kind, pipeline),
            "{packet:?}"
        );
        packet
    }

    /// Nothing arrives for a while.
    async fn quiet(&mut self, wait: Duration) {
        let mut line = String::new();
        if let Ok(result) = timeout(wait, self.reader.read_line(&mut line)).await {
            panic!("expected silence, got {result:?} {line:?}");
        }
    }

    /// The messages in a Data packet.
    fn messages(&mut self, packet: &Packet) -> Vec<Message> {
        let Packet::Data { data, .. } = packet else {
            panic!("not Data: {packet:?}")
        };
        self.defragmenter.feed(data);
        let mut out = Vec::new();
        while let Some(bytes) = self.defragmenter.next_message().expect("whole fragments") {
            let message = Message::decode(bytes).expect("a message");
            assert_eq!(message.destination, Destination::Server);
            out.push(message);
        }
        out
    }

    async fn send(&mut self, packet: Packet) {
        self.writer.write_all(&packet.encode()).await.expect("write");
    }

    async fn send_message(&mut self, pipeline: Option<Uuid>, message_type: MessageType, body: PsValue) {
        let xml = if body.is_nil() {
            String::new()
        } else {
            clixml::to_clixml(&body)
        };
        let message = Message::new(
            Destination::Client,
            message_type,
            self.pool,
            pipeline,
            xml.into_bytes(),
        );
        for fragment in self.fragmenter.fragment(&message.encode()) {
            self.send(Packet::data(DataStream::Default, pipeline, fragment))
                .await;
        }
    }

    async fn pool_state(&mut self, state: i32, error: Option<PsValue>) {
        let mut props = vec![("RunspaceState", PsValue::I32(state))];
        props.extend(error.map(|e| ("ExceptionAsErrorRecord", e)));
        self.send_message(
            None,
            MessageType::RunspacePoolState,
            PsObject::custom(props).into(),
        )
        .await;
    }

    async fn pipeline_state(&mut self, pipeline: Uuid, state: i32) {
        let body = PsObject::custom([("PipelineState", PsValue::I32(state))]).into();
        self.send_message(Some(pipeline), MessageType::PipelineState, body)
            .await;
    }

    async fn output(&mut self, pipeline: Uuid, value: impl Into<PsValue>) {
        self.send_message(Some(pipeline), MessageType::PipelineOutput, value.into())
            .await;
    }

    /// The client's pool data, answered as PowerShell does: replies first, then the DataAck.
    async fn handshake(&mut self) {
        let packet = self.expect(PacketKind::Data, None).await;
        let messages = self.messages(&packet);
        let types: Vec<_> = messages.iter().map(|m| m.message_type).collect();
        assert_eq!(
            types,
            [MessageType::SessionCapability, MessageType::InitRunspacePool]
        );
        self.pool = messages[0].runspace_pool_id;
        let capability = crate::messages::SessionCapability::client().to_value();
        self.send_message(None, MessageType::SessionCapability, capability)
            .await;
        let private = PsObject::custom([(
            "ApplicationPrivateData",
            PsValue::hashtable(Vec::<(&str, i32)>::new()),
        )]);
        self.send_message(None, MessageType::ApplicationPrivateData, private.into())
            .await;
        self.pool_state(2, None).await;
        self.send(Packet::DataAck { pipeline_id: None }).await;
    }

    /// A new pipeline: Command, CommandAck, its CREATE_PIPELINE, DataAck. Returns its id and script.
    async fn accept_pipeline(&mut self) -> (Uuid, String) {
        let command = self.next().await.expect("a Command");
        let Packet::Command {
            pipeline_id: Some(id),
        } = command
        else {
            panic!("{command:?}")
        };
        self.send(Packet::CommandAck {
            pipeline_id: Some(id),
        })
        .await;
        let mut messages = Vec::new();
        while messages.is_empty() {
            let data = self.expect(PacketKind::Data, Some(id)).await;
            messages = self.messages(&data);
            self.send(Packet::DataAck {
                pipeline_id: Some(id),
            })
            .await;
        }
        assert_eq!(messages[0].message_type, MessageType::CreatePipeline);
        assert_eq!(messages[0].pipeline_id, Some(id));
        let body = clixml::parse(messages[0].xml().expect("xml")).expect("clixml");
        let script = body
            .get("PowerShell")
            .and_then(|p| p.get("Cmds"))
            .and_then(PsValue::as_list)
            .and_then(|cmds| cmds.first()?.get("Cmd")?.as_str().map(str::to_owned))
            .expect("a command");
        (id, script)
    }

    /// Ends a pipeline as the peer does, and answers its Close.
    async fn complete(&mut self, id: Uuid) {
        self.pipeline_state(id, 4).await;
        self.expect(PacketKind::Close, Some(id)).await;
        self.send(Packet::CloseAck {
            pipeline_id: Some(id),
        })
        .await;
    }

    /// Ends a pipeline and answers its Close, then accepts the next pipeline.
    async fn complete_then_accept(&mut self, id: Uuid) -> (Uuid, String) {
        self.complete(id).await;
        self.accept_pipeline().await
    }

    /// Answers the pool's Close.
    async fn close_pool(&mut self) {
        self.expect(PacketKind::Close, None).await;
        self.pool_state(3, None).await;
        self.send(Packet::CloseAck { pipeline_id: None }).await;
    }
}

fn options() -> SessionOptions {
    SessionOptions {
        open_timeout: STEP,
        operation_timeout: STEP,
        ..SessionOptions::default()
    }
}

/// A session on one end of a pipe and a server that has answered its open on the other.
async fn pair_with(options: SessionOptions) -> (Session, Server) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut server = Server::new(server);
    let (session, ()) = tokio::join!(Session::open_stream(client, options), server.handshake());
    (session.expect("opens"), server)
}

async fn pair() -> (Session, Server) {
    pair_with(options()).await
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    timeout(STEP, future).await.expect("in time")
}

fn no_parameters() -> Vec<(&'static str, PsValue)> {
    Vec::new()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn tasks_settle(baseline: usize) {
    bounded(async {
        while alive_tasks() > baseline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn runs_a_pipeline_and_closes_in_protocol_order() {
    let baseline = alive_tasks();
    let (session, mut server) = pair().await;
    assert_eq!(session.instance_id(), server.pool);
    assert_eq!(session.protocol_version().as_deref(), Some("2.3"));
    let status = session.status().borrow().clone();
    assert_eq!(
        (status.state, status.availability),
        (RunspacePoolState::Opened, Availability::Available)
    );

    let (handle, (id, script)) = tokio::join!(
        session.run_script("'hi'", no_parameters()),
        server.accept_pipeline()
    );
    let handle = handle.expect("invoked");
    assert_eq!((handle.id(), script.as_str()), (id, "'hi'"));
    assert_eq!(session.status().borrow().availability, Availability::Busy);
    server.pipeline_state(id, 1).await;
    server.output(id, "hi").await;
    server.complete(id).await;
    let outcome = bounded(handle.collect()).await.expect("completed");
    assert_eq!(
        (outcome.state, outcome.output),
        (PipelineState::Completed, vec![PsValue::from("hi")])
    );
    assert_eq!(session.status().borrow().availability, Availability::Available);

    let mut status = session.status();
    let (closed, ()) = tokio::join!(session.close(), server.close_pool());
    closed.expect("a clean close");
    assert_eq!(status.borrow_and_update().state, RunspacePoolState::Closed);
    // The transport was shut down politely: the server reads the end of the stream.
    assert!(server.next().await.is_none());
    tasks_settle(baseline).await;
}

#[tokio::test]
async fn invokes_wait_their_turn_in_order() {
    let (session, mut server) = pair().await;
    let session = Arc::new(session);
    let first = bounded(async {
        let (handle, (id, _)) = tokio::join!(
            session.run_script("'1'", no_parameters()),
            server.accept_pipeline()
        );
        (handle.expect("first"), id)
    })
    .await;
    // Two more, made in order while the first runs: nothing goes to the server yet.
    let s = Arc::clone(&session);
    let second = tokio::spawn(async move { s.run_script("'2'", no_parameters()).await });
    tokio::task::yield_now().await;
    let s = Arc::clone(&session);
    let third = tokio::spawn(async move { s.run_script("'3'", no_parameters()).await });
    server.quiet(Duration::from_millis(100)).await;
    server.complete(first.1).await;
    let (id2, script) = server.accept_pipeline().await;
    assert_eq!(script, "'2'");
    let _second = bounded(second).await.expect("joined").expect("second");
    server.quiet(Duration::from_millis(50)).await;
    server.complete(id2).await;
    let (_, script) = server.accept_pipeline().await;
    assert_eq!(script, "'3'");
    let third = bounded(third).await.expect("joined").expect("third");
    assert_ne!(third.id(), id2);
}

/// The client's end of the pipe, recording what each write carried.
struct Recording {
    inner: DuplexStream,
    writes: Arc<std::sync::Mutex<Vec<String>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &result {
            let written = String::from_utf8_lossy(&buf[..*n]).into_owned();
            self.writes.lock().expect("not poisoned").push(written);
        }
        result
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_caller_asking_at_once_gets_its_command_in_the_write_of_the_last_close() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = Recording {
        inner: client,
        writes: Arc::clone(&writes),
    };
    let mut server = Server::new(server);
    let (session, ()) = tokio::join!(Session::open_stream(client, options()), server.handshake());
    let session = session.expect("opens");
    let (handle, (first, _)) = tokio::join!(
        session.run_script("'1'", no_parameters()),
        server.accept_pipeline()
    );
    let handle = handle.expect("first");
    // As a loop of pipelines does: the next one is asked for as soon as the last has ended.
    let caller = async {
        handle.collect().await.expect("completed");
        session.run_script("'2'", no_parameters()).await.expect("second")
    };
    let (_, (second, _)) = bounded(async { tokio::join!(caller, server.complete_then_accept(first)) }).await;
    let close = format!("<Close PSGuid='{first}' />");
    let command = format!("<Command PSGuid='{second}' />");
    let writes = writes.lock().expect("not poisoned");
    assert!(
        writes.iter().any(|w| w.contains(&close) && w.contains(&command)),
        "{writes:#?}"
    );
}

#[tokio::test]
async fn host_calls_are_answered_on_the_prompt_response_stream() {
    let (session, mut server) = pair().await;
    let (handle, (id, _)) = tokio::join!(
        session.run_script("Read-Host", no_parameters()),
        server.accept_pipeline()
    );
    let handle = handle.expect("invoked");
    let method = PsObject {
        to_string: Some("ReadLine".to_owned()),
        content: ObjContent::Value(PsValue::I32(11)),
        ..PsObject::default()
    };
    let call = PsObject::custom([
        ("ci", PsValue::I64(7)),
        ("mi", method.into()),
        ("mp", PsValue::array([])),
    ]);
    server
        .send_message(Some(id), MessageType::PipelineHostCall, call.into())
        .await;
    let answer = server.expect(PacketKind::Data, Some(id)).await;
    let Packet::Data { stream, .. } = &answer else {
        unreachable!()
    };
    assert_eq!(*stream, DataStream::PromptResponse);
    let messages = server.messages(&answer);
    assert_eq!(messages[0].message_type, MessageType::PipelineHostResponse);
    let body = clixml::parse(messages[0].xml().expect("xml")).expect("clixml");
    assert_eq!(body.get("ci").and_then(PsValue::as_i64), Some(7));
    let refusal = ErrorRecord::from_value(body.get("me").expect("an error record")).expect("an ErrorRecord");
    assert!(
        refusal.message().contains("not interactive"),
        "{}",
        refusal.message()
    );
    server
        .send(Packet::DataAck {
            pipeline_id: Some(id),
        })
        .await;
    server.complete(id).await;
    let outcome = bounded(handle.collect()).await.expect("completed");
    assert_eq!(outcome.host_calls.len(), 1);
    assert_eq!(outcome.host_calls[0].method_name.as_deref(), Some("ReadLine"));
}

#[tokio::test]
async fn large_data_goes_in_whole_fragments_one_packet_per_ack() {
    let (session, mut server) = pair().await;
    let big = "é".repeat(60_000); // ~120 KB of CLIXML: four 32 KiB fragments
    let invoke = session.run_script("param($S) $S", [("S", PsValue::from(big.as_str()))]);
    let serve = async {
        let Some(Packet::Command {
            pipeline_id: Some(id),
        }) = server.next().await
        else {
            panic!()
        };
        server
            .send(Packet::CommandAck {
                pipeline_id: Some(id),
            })
            .await;
        let mut packets = 0;
        loop {
            let packet = server.expect(PacketKind::Data, Some(id)).await;
            let Packet::Data { data, .. } = &packet else {
                unreachable!()
            };
            // Whole fragments only, within the fragment size.
            assert!(data.len() <= crate::fragment::DEFAULT_MAX_FRAGMENT_SIZE);
            let mut pos = 0;
            while pos < data.len() {
                let header = FragmentHeader::parse(&data[pos..]).expect("a fragment header");
                pos += HEADER_LEN + header.blob_len as usize;
            }
            assert_eq!(pos, data.len());
            packets += 1;
            let done = !server.messages(&packet).is_empty();
            // The next packet waits for this one's ack.
            server.quiet(Duration::from_millis(30)).await;
            server
                .send(Packet::DataAck {
                    pipeline_id: Some(id),
                })
                .await;
            if done {
                return (id, packets);
            }
        }
    };
    let (handle, (id, packets)) = tokio::join!(invoke, serve);
    assert!(packets >= 4, "{packets}");
    assert_eq!(handle.expect("invoked").id(), id);
}

#[tokio::test]
async fn a_slow_reader_holds_the_server_back_and_loses_nothing() {
    let (session, mut server) = pair().await;
    let (handle, (id, _)) = tokio::join!(
        session.run_script("1..5000", no_parameters()),
        server.accept_pipeline()
    );
    let mut handle = handle.expect("invoked");
    // The handle reads nothing: the task stops reading, the pipe fills, the server's writes stall.
    let flood = async {
        for i in 0..5000 {
            server.output(id, PsValue::I32(i)).await;
        }
    };
    assert!(
        timeout(Duration::from_millis(500), flood).await.is_err(),
        "the writes should stall"
    );
    // Read on: everything arrives, in order (the stalled write resumes where it was).
    let reader = async {
        let mut next = 0;
        while next < HIGH_WATER as i32 {
            match handle.next_event().await {
                Some(PipelineEvent::Output(PsValue::I32(i))) => {
                    assert_eq!(i, next);
                    next += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        next
    };
    let read = bounded(reader).await;
    assert_eq!(read, HIGH_WATER as i32);
}

#[tokio::test]
async fn stop_signals_and_waits_for_the_final_state() {
    let (session, mut server) = pair().await;
    let (handle, (id, _)) = tokio::join!(
        session.run_script("Start-Sleep 60", no_parameters()),
        server.accept_pipeline()
    );
    let handle = handle.expect("invoked");
    let serve = async {
        server.expect(PacketKind::Signal, Some(id)).await;
        server.pipeline_state(id, 3).await;
        server
            .send(Packet::SignalAck {
                pipeline_id: Some(id),
            })
            .await;
        server.expect(PacketKind::Close, Some(id)).await;
        server
            .send(Packet::CloseAck {
                pipeline_id: Some(id),
            })
            .await;
    };
    let (stopped, ()) = bounded(async { tokio::join!(handle.stop(), serve) }).await;
    stopped.expect("stopped");
    assert_eq!(
        bounded(handle.collect()).await.expect("ended").state,
        PipelineState::Stopped
    );

    // A dropped handle stops its pipeline too.
    let (handle, (id, _)) = tokio::join!(
        session.run_script("Start-Sleep 60", no_parameters()),
        server.accept_pipeline()
    );
    drop(handle.expect("invoked"));
    server.expect(PacketKind::Signal, Some(id)).await;
}

#[tokio::test]
async fn a_stream_ending_mid_pipeline_keeps_the_output_and_breaks_the_session() {
    let (session, mut server) = pair().await;
    let (handle, (id, _)) = tokio::join!(
        session.run_script("1..3", no_parameters()),
        server.accept_pipeline()
    );
    let handle = handle.expect("invoked");
    server.pipeline_state(id, 1).await;
    server.output(id, PsValue::I32(1)).await;
    server.output(id, PsValue::I32(2)).await;
    drop(server);
    let CollectError { error, partial } = bounded(handle.collect()).await.expect_err("lost");
    assert!(matches!(error, SessionError::ConnectionClosed), "{error:?}");
    assert_eq!(partial.output, [PsValue::I32(1), PsValue::I32(2)]);
    assert_eq!(partial.state, PipelineState::Running);
    let status = session.status().borrow().clone();
    assert_eq!(
        (status.state, status.availability),
        (RunspacePoolState::Broken, Availability::None)
    );
    assert_eq!(status.error.map(|e| e.reason()), Some("ConnectionClosed"));
    let e = session
        .run_script("'x'", no_parameters())
        .await
        .expect_err("broken");
    assert_eq!(e.reason(), "ConnectionClosed");
    assert_eq!(
        session.close().await.expect_err("says why").reason(),
        "ConnectionClosed"
    );
}

#[tokio::test]
async fn a_missing_ack_is_an_operation_timeout() {
    let (session, mut server) = pair_with(SessionOptions {
        operation_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    let started = tokio::time::Instant::now();
    let (result, _) = tokio::join!(session.run_script("'x'", no_parameters()), server.next());
    let e = result.expect_err("no CommandAck");
    assert!(
        matches!(e, SessionError::OperationTimeout { what, .. } if what.contains("CommandAck")),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(session.status().borrow().state, RunspacePoolState::Broken);
}

#[tokio::test]
async fn a_silent_server_is_an_open_timeout_and_leaves_no_task() {
    let baseline = alive_tasks();
    let (client, _server) = tokio::io::duplex(1024);
    let short = SessionOptions {
        open_timeout: Duration::from_millis(200),
        ..options()
    };
    let e = bounded(Session::open_stream(client, short))
        .await
        .expect_err("silence");
    assert!(matches!(e, SessionError::OpenTimeout(_)), "{e:?}");
    assert_eq!(e.reason(), "OpenTimeout");
    tasks_settle(baseline).await;

    // An open abandoned by its caller ends the task too.
    let (client, _server) = tokio::io::duplex(1024);
    assert!(
        timeout(Duration::from_millis(50), Session::open_stream(client, options()))
            .await
            .is_err()
    );
    tasks_settle(baseline).await;
}

#[tokio::test]
async fn remote_failures_are_typed() {
    // The server says the pool is Broken, with an error record.
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut server = Server::new(server);
    let serve = async {
        let packet = server.expect(PacketKind::Data, None).await;
        server.pool = server.messages(&packet)[0].runspace_pool_id;
        let record = PsObject {
            to_string: Some("no such endpoint".to_owned()),
            ..PsObject::default()
        };
        server.pool_state(5, Some(record.into())).await;
    };
    let (result, ()) = tokio::join!(Session::open_stream(client, options()), serve);
    let e = result.expect_err("broken");
    assert!(
        matches!(&e, SessionError::Broken { message } if message == "no such endpoint"),
        "{e:?}"
    );

    // A line that is not a packet.
    let (session, mut server) = pair().await;
    server.writer.write_all(b"not a packet\n").await.expect("write");
    let mut status = session.status();
    let status = bounded(status.wait_for(|s| s.error.is_some()))
        .await
        .expect("alive")
        .clone();
    assert_eq!(status.error.map(|e| e.reason()), Some("FramingError"));

    // A packet only clients send.
    let (session, mut server) = pair().await;
    server.send(Packet::Signal { pipeline_id: None }).await;
    let mut status = session.status();
    let status = bounded(status.wait_for(|s| s.error.is_some()))
        .await
        .expect("alive")
        .clone();
    assert!(matches!(
        status.error,
        Some(SessionError::UnexpectedPacket(PacketKind::Signal))
    ));

    // A message for a pipeline that does not exist.
    let (session, mut server) = pair().await;
    server.output(Uuid::new_v4(), "stray").await;
    let mut status = session.status();
    let status = bounded(status.wait_for(|s| s.error.is_some()))
        .await
        .expect("alive")
        .clone();
    assert_eq!(status.error.map(|e| e.reason()), Some("ProtocolError"));

    // The server closes the pool on its own.
    let (session, mut server) = pair().await;
    server.pool_state(3, None).await;
    let mut status = session.status();
    let status = bounded(status.wait_for(|s| s.error.is_some()))
        .await
        .expect("alive")
        .clone();
    assert_eq!(status.error.map(|e| e.reason()), Some("ClosedByServer"));
}

#[tokio::test]
async fn dropping_the_session_drops_the_connection_and_tells_the_handle() {
    let baseline = alive_tasks();
    let (session, mut server) = pair().await;
    let (handle, (id, _)) = tokio::join!(
        session.run_script("Start-Sleep 60", no_parameters()),
        server.accept_pipeline()
    );
    let mut handle = handle.expect("invoked");
    server.output(id, "a").await;
    assert!(matches!(
        bounded(handle.next_event()).await,
        Some(PipelineEvent::Output(_))
    ));
    drop(session);
    assert!(
        server.next().await.is_none(),
        "the connection ends without a Close"
    );
    assert!(matches!(
        bounded(handle.next_event()).await,
        Some(PipelineEvent::Lost(SessionError::Closed))
    ));
    assert!(handle.next_event().await.is_none());
    assert_eq!(handle.stop().await.expect_err("gone").reason(), "Closed");
    tasks_settle(baseline).await;
}

#[test]
fn json_parameters_become_typed_values() {
    let json = serde_json::json!({"s": "x", "i": 1, "l": 5_000_000_000_i64, "f": 1.5, "b": true, "n": null,
        "a": [1, "two"], "m": {"k": 1}});
    let get = |k: &str| value_from_json(&json[k]);
    assert_eq!(get("s"), PsValue::from("x"));
    assert_eq!(get("i"), PsValue::I32(1));
    assert_eq!(get("l"), PsValue::I64(5_000_000_000));
    assert_eq!(get("f"), PsValue::Double(1.5));
    assert_eq!(get("b"), PsValue::Bool(true));
    assert_eq!(get("n"), PsValue::Nil);
    assert_eq!(
        get("a").as_list(),
        Some(&[PsValue::I32(1), PsValue::from("two")][..])
    );
    let m = get("m");
    let dict = m.as_object().and_then(PsObject::dict).expect("a hashtable");
    assert_eq!(dict, [(PsValue::from("k"), PsValue::I32(1))]);
}

#[test]
fn records_are_read_leniently() {
    let event = PipelineEvent::record(Stream::Error, PsValue::from("plain"));
    let PipelineEvent::Error(record) = event else {
        panic!()
    };
    assert_eq!(record.message(), "plain");
    let PipelineEvent::Warning(record) = PipelineEvent::record(Stream::Warning, PsValue::from("w")) else {
        panic!()
    };
    assert_eq!(record.message, "w");
    let PipelineEvent::Progress(record) = PipelineEvent::record(Stream::Progress, PsValue::I32(3)) else {
        panic!()
    };
    assert_eq!(record.activity, "3");
}

#[test]
fn session_and_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Session>();
    send_sync::<SessionError>();
    fn send<T: Send>() {}
    send::<PipelineHandle>();
}
