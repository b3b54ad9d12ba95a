//! The client side of a runspace pool and its pipelines, as a sans-IO state machine (like psrpcore's
//! `ClientRunspacePool`): calls queue PSRP messages to send, [`RunspacePool::receive`] takes the
//! fragment bytes the server sent, and [`RunspacePool::next_event`] says what happened. It does no
//! IO and knows no transport: the facade moves [`Outbound`] data and says when a pipeline is
//! created, signalled or closed in the transport's own way.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;
use uuid::Uuid;

use crate::{
    clixml::{self, ClixmlError, PsValue, SecureBytes},
    crypto::{CryptoError, ExchangeKey, SessionKey},
    fragment::{DefragmentError, Defragmenter, Fragmenter},
    message::{Destination, Message, MessageError, MessageType},
    messages::{
        self, BodyError, ConnectRunspacePool, CreatePipeline, HostCall, InitRunspacePool, PipelineStateMsg,
        RunspaceAvailability, RunspacePoolInitData, RunspacePoolStateMsg, SessionCapability,
    },
    state::{PipelineState, RunspacePoolState},
};

/// What opens a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolOptions {
    pub min_runspaces: i32,
    pub max_runspaces: i32,
    /// `$PSSenderInfo.ApplicationArguments` on the server.
    pub application_arguments: Vec<(String, PsValue)>,
    /// The largest fragment (header included) sent; the transport's limit.
    pub max_fragment_size: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            min_runspaces: 1,
            max_runspaces: 1,
            application_arguments: Vec::new(),
            max_fragment_size: crate::fragment::DEFAULT_MAX_FRAGMENT_SIZE,
        }
    }
}

/// Protocol errors: what the server sent, or asked of the pool, does not fit the protocol.
#[derive(Debug, Error)]
pub enum PoolError {
    #[error("the runspace pool is {state}, which does not allow {action}")]
    InvalidState {
        state: RunspacePoolState,
        action: &'static str,
    },
    #[error("the server moved the runspace pool from {from} to {to}")]
    InvalidPoolTransition {
        from: RunspacePoolState,
        to: RunspacePoolState,
    },
    #[error("the server moved pipeline {pipeline} from {from} to {to}")]
    InvalidPipelineTransition {
        pipeline: Uuid,
        from: PipelineState,
        to: PipelineState,
    },
    #[error("the server sent {message_type} for pipeline {pipeline}, which this pool does not have")]
    UnknownPipeline {
        pipeline: Uuid,
        message_type: MessageType,
    },
    #[error("the server sent a message for runspace pool {got}, not {expected}")]
    WrongPool { expected: Uuid, got: Uuid },
    #[error("a message from the server was addressed to the server")]
    WrongDestination,
    #[error(transparent)]
    Fragment(#[from] DefragmentError),
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("{message_type}: {source}")]
    Clixml {
        message_type: MessageType,
        source: ClixmlError,
    },
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the server sent ENCRYPTED_SESSION_KEY, but this client sent no PUBLIC_KEY")]
    UnexpectedSessionKey,
    #[error("no session key yet: exchange keys first (exchange_key) and wait for SessionKeyReady")]
    NoSessionKey,
    #[error("a SecureString (<SS>) was expected, not <{0}>")]
    NotSecureString(&'static str),
}

/// Bytes for the transport to send: the fragments of one or more messages of one target (the pool
/// when `pipeline_id` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub pipeline_id: Option<Uuid>,
    pub data: Vec<u8>,
    /// An answer to a host call: transports that have a channel for these use it (OutOfProc
    /// `Stream='PromptResponse'`, WS-Management's `pr` stream), so it overtakes queued input.
    pub prompt_response: bool,
}

/// The stream a pipeline record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Output,
    Error,
    Warning,
    Verbose,
    Debug,
    Information,
    Progress,
}

/// What the server said, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server's SESSION_CAPABILITY: its protocol version.
    SessionCapability(SessionCapability),
    /// The session configuration's private data.
    ApplicationPrivateData(PsValue),
    /// The pool changed state; `error` is the ErrorRecord of a Broken pool.
    PoolState {
        state: RunspacePoolState,
        error: Option<PsValue>,
    },
    /// The pool's limits, after a connect.
    InitData(RunspacePoolInitData),
    /// The answer to a runspace count call.
    Availability(RunspaceAvailability),
    /// A record of a pipeline's stream.
    Record {
        pipeline: Uuid,
        stream: Stream,
        value: PsValue,
    },
    /// A pipeline changed state; `error` is the ErrorRecord of a Failed pipeline.
    PipelineState {
        pipeline: Uuid,
        state: PipelineState,
        error: Option<PsValue>,
    },
    /// A host method call; answered already when [`HostCall::expects_response`] (see `answer_host_call`).
    HostCall { pipeline: Option<Uuid>, call: HostCall },
    /// A USER_EVENT from the server.
    UserEvent(PsValue),
    /// The server's ENCRYPTED_SESSION_KEY arrived: SecureStrings can be encrypted and decrypted.
    SessionKeyReady,
    /// A message type this client does not know, skipped as PowerShell skips them.
    Ignored { message_type: MessageType },
}

/// A client runspace pool.
#[derive(Debug)]
pub struct RunspacePool {
    id: Uuid,
    options: PoolOptions,
    state: RunspacePoolState,
    fragmenter: Fragmenter,
    defragmenter: Defragmenter,
    outbound: VecDeque<Outbound>,
    events: VecDeque<Event>,
    pipelines: HashMap<Uuid, PipelineState>,
    server_capability: Option<SessionCapability>,
    next_call_id: i64,
    /// The RSA key sent in PUBLIC_KEY, once sent (its `Debug` shows no key material).
    exchange_key: Option<ExchangeKey>,
    /// The server's SecureString key (its `Debug` shows no key material).
    session_key: Option<SessionKey>,
}

impl RunspacePool {
    pub fn new(options: PoolOptions) -> Self {
        Self::with_id(Uuid::new_v4(), options)
    }

    /// A pool with a known id: the one to connect to, for a reconnect.
    pub fn with_id(id: Uuid, options: PoolOptions) -> Self {
        let fragmenter = Fragmenter::with_max_fragment_size(options.max_fragment_size)
            .unwrap_or_else(|_| Fragmenter::new());
        RunspacePool {
            id,
            options,
            state: RunspacePoolState::BeforeOpen,
            fragmenter,
            defragmenter: Defragmenter::new(),
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            pipelines: HashMap::new(),
            server_capability: None,
            next_call_id: 1,
            exchange_key: None,
            session_key: None,
        }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn state(&self) -> RunspacePoolState {
        self.state
    }

    /// The protocol version the server announced.
    pub fn server_capability(&self) -> Option<&SessionCapability> {
        self.server_capability.as_ref()
    }

    /// The pipeline's state, while the pool knows it (until it ends).
    pub fn pipeline_state(&self, pipeline: Uuid) -> Option<PipelineState> {
        self.pipelines.get(&pipeline).copied()
    }

    /// Pipelines not yet finished.
    pub fn running_pipelines(&self) -> usize {
        self.pipelines.len()
    }

    /// Queues SESSION_CAPABILITY and INIT_RUNSPACEPOOL.
    pub fn open(&mut self) -> Result<(), PoolError> {
        self.require(RunspacePoolState::BeforeOpen, "open")?;
        let init = InitRunspacePool {
            min_runspaces: self.options.min_runspaces,
            max_runspaces: self.options.max_runspaces,
            application_arguments: self.options.application_arguments.clone(),
        };
        self.queue_pool_messages(&[
            (
                MessageType::SessionCapability,
                SessionCapability::client().to_value(),
            ),
            (MessageType::InitRunspacePool, init.to_value()),
        ]);
        self.state = RunspacePoolState::NegotiationSent;
        Ok(())
    }

    /// Queues SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL, to reattach to a disconnected pool of this
    /// id (MS-PSRP 3.1.4.10.3).
    pub fn connect(&mut self) -> Result<(), PoolError> {
        self.require(RunspacePoolState::BeforeOpen, "connect")?;
        self.queue_pool_messages(&[
            (
                MessageType::SessionCapability,
                SessionCapability::client().to_value(),
            ),
            (
                MessageType::ConnectRunspacePool,
                ConnectRunspacePool::default().to_value(),
            ),
        ]);
        self.state = RunspacePoolState::Connecting;
        Ok(())
    }

    /// The transport disconnected the shell (WS-Management Disconnect): the server keeps the pool
    /// and goes on running its pipelines, buffering their output. The pool and its running
    /// pipelines are Disconnected until [`Self::reconnected`], or until a new client connects
    /// ([`Self::connect`] on a pool made with the same id).
    pub fn disconnected(&mut self) -> Result<(), PoolError> {
        self.require(RunspacePoolState::Opened, "a disconnect")?;
        self.set_pool_state(RunspacePoolState::Disconnected, None)?;
        for pipeline in self.pipelines_in(PipelineState::Running) {
            self.set_pipeline_state(pipeline, PipelineState::Disconnected, None)?;
        }
        Ok(())
    }

    /// The same client took the shell back (WS-Management Reconnect): the pool is Opened again and
    /// its disconnected pipelines run on; their buffered output arrives with the next receives.
    pub fn reconnected(&mut self) -> Result<(), PoolError> {
        self.require(RunspacePoolState::Disconnected, "a reconnect")?;
        self.set_pool_state(RunspacePoolState::Opened, None)?;
        for pipeline in self.pipelines_in(PipelineState::Disconnected) {
            self.set_pipeline_state(pipeline, PipelineState::Running, None)?;
        }
        Ok(())
    }

    /// Takes on a pipeline that an earlier client started in this pool and left running when it
    /// disconnected or vanished (Receive-PSSession): after [`Self::connect`], its records and
    /// state are this client's to receive. Its id is the WS-Management CommandId.
    pub fn adopt_pipeline(&mut self, pipeline: Uuid) -> Result<(), PoolError> {
        if self.state != RunspacePoolState::Connecting {
            self.require(RunspacePoolState::Opened, "adopting a pipeline")?;
        }
        self.pipelines.entry(pipeline).or_insert(PipelineState::Running);
        Ok(())
    }

    fn pipelines_in(&self, state: PipelineState) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self
            .pipelines
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(id, _)| *id)
            .collect();
        // Events in a stable order, whatever the map's.
        ids.sort_unstable();
        ids
    }

    /// Marks the pool as closing; the transport closes it its own way (OutOfProc `<Close>`, a WSMan
    /// Delete) and the server answers with state Closed, or the transport says it is gone.
    pub fn begin_close(&mut self) {
        if !self.state.is_final() {
            self.state = RunspacePoolState::Closing;
        }
    }

    /// The transport has closed the pool (or lost it): it is final now.
    pub fn closed(&mut self, broken: bool) {
        let state = if broken {
            RunspacePoolState::Broken
        } else {
            RunspacePoolState::Closed
        };
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::PoolState { state, error: None });
        }
        for (pipeline, old) in std::mem::take(&mut self.pipelines) {
            if !old.is_final() {
                let state = if broken {
                    PipelineState::Failed
                } else {
                    PipelineState::Stopped
                };
                self.events.push_back(Event::PipelineState {
                    pipeline,
                    state,
                    error: None,
                });
            }
        }
    }

    /// Queues CREATE_PIPELINE for a new pipeline and returns its id. The transport may need to
    /// announce the pipeline before its data (OutOfProc `<Command>`).
    pub fn create_pipeline(&mut self, pipeline: &CreatePipeline) -> Result<Uuid, PoolError> {
        self.require(RunspacePoolState::Opened, "a new pipeline")?;
        let id = Uuid::new_v4();
        self.pipelines.insert(id, PipelineState::NotStarted);
        self.queue(Some(id), &[(MessageType::CreatePipeline, pipeline.to_value())]);
        Ok(id)
    }

    /// Queues one PIPELINE_INPUT object.
    pub fn send_input(&mut self, pipeline: Uuid, value: &PsValue) -> Result<(), PoolError> {
        self.require_pipeline(pipeline, MessageType::PipelineInput)?;
        self.queue(Some(pipeline), &[(MessageType::PipelineInput, value.clone())]);
        Ok(())
    }

    /// Queues END_OF_PIPELINE_INPUT.
    pub fn end_input(&mut self, pipeline: Uuid) -> Result<(), PoolError> {
        self.require_pipeline(pipeline, MessageType::EndOfPipelineInput)?;
        self.queue(Some(pipeline), &[(MessageType::EndOfPipelineInput, PsValue::Nil)]);
        Ok(())
    }

    /// Queues SET_MAX_RUNSPACES or SET_MIN_RUNSPACES; the answer comes as [`Event::Availability`]
    /// with the returned call id.
    pub fn set_runspaces(&mut self, max: bool, count: i32) -> Result<i64, PoolError> {
        self.require(RunspacePoolState::Opened, "changing the runspace limits")?;
        let call_id = self.call_id();
        let message_type = if max {
            MessageType::SetMaxRunspaces
        } else {
            MessageType::SetMinRunspaces
        };
        self.queue_pool_messages(&[(message_type, messages::set_runspaces(max, count, call_id))]);
        Ok(call_id)
    }

    /// Queues RESET_RUNSPACE_STATE: the session's variables are cleared.
    pub fn reset_runspace_state(&mut self) -> Result<i64, PoolError> {
        self.require(RunspacePoolState::Opened, "a state reset")?;
        let call_id = self.call_id();
        self.queue_pool_messages(&[(
            MessageType::ResetRunspaceState,
            messages::reset_runspace_state(call_id),
        )]);
        Ok(call_id)
    }

    /// Queues the answer to a host call.
    pub fn host_response(
        &mut self,
        pipeline: Option<Uuid>,
        call: &HostCall,
        result: Result<PsValue, PsValue>,
    ) {
        let message_type = match pipeline {
            Some(_) => MessageType::PipelineHostResponse,
            None => MessageType::RunspacePoolHostResponse,
        };
        self.queue(pipeline, &[(message_type, messages::host_response(call, result))]);
        if let Some(last) = self.outbound.back_mut() {
            last.prompt_response = true;
        }
    }

    /// Starts the SecureString key exchange (MS-PSRP 3.1.5.4.3): makes an RSA exchange key and queues
    /// PUBLIC_KEY; the server answers with ENCRYPTED_SESSION_KEY, which gives
    /// [`Event::SessionKeyReady`]. Only when Opened; once per pool (later calls do nothing). Making
    /// the key takes a moment of CPU.
    pub fn exchange_key(&mut self) -> Result<(), PoolError> {
        if self.exchange_key.is_some() {
            return Ok(());
        }
        self.require(RunspacePoolState::Opened, "a key exchange")?;
        let key = ExchangeKey::generate()?;
        let blob = key.public_key_base64();
        self.exchange_key = Some(key);
        self.queue_pool_messages(&[(MessageType::PublicKey, messages::public_key(&blob))]);
        Ok(())
    }

    /// Whether the server's session key has arrived.
    pub fn has_session_key(&self) -> bool {
        self.session_key.is_some()
    }

    /// A SecureString of `value`, encrypted with the session key, to send to the server.
    pub fn encrypt_secure_string(&self, value: &str) -> Result<PsValue, PoolError> {
        let key = self.session_key.as_ref().ok_or(PoolError::NoSessionKey)?;
        Ok(PsValue::SecureString(SecureBytes(key.encrypt(value))))
    }

    /// The string in a SecureString the server sent.
    pub fn decrypt_secure_string(&self, value: &PsValue) -> Result<String, PoolError> {
        let PsValue::SecureString(SecureBytes(bytes)) = value else {
            return Err(PoolError::NotSecureString(value.tag()));
        };
        let key = self.session_key.as_ref().ok_or(PoolError::NoSessionKey)?;
        Ok(key.decrypt(bytes)?)
    }

    /// The next data for the transport to send.
    pub fn take_outbound(&mut self) -> Option<Outbound> {
        self.outbound.pop_front()
    }

    /// The next thing the server said.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes fragment bytes from the server (any split) and turns every complete message into events.
    /// An error leaves the pool unusable: the server broke the protocol.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), PoolError> {
        self.defragmenter.feed(data);
        while let Some(bytes) = self.defragmenter.next_message()? {
            let message = Message::decode(bytes)?;
            self.process(message)?;
        }
        Ok(())
    }

    fn process(&mut self, message: Message) -> Result<(), PoolError> {
        if message.destination != Destination::Client {
            return Err(PoolError::WrongDestination);
        }
        if message.runspace_pool_id != self.id && !message.runspace_pool_id.is_nil() {
            return Err(PoolError::WrongPool {
                expected: self.id,
                got: message.runspace_pool_id,
            });
        }
        let message_type = message.message_type;
        if !message_type.is_known() {
            self.events.push_back(Event::Ignored { message_type });
            return Ok(());
        }
        let body = if message.data.is_empty() {
            PsValue::Nil
        } else {
            let xml = message.xml()?;
            clixml::parse(xml).map_err(|source| PoolError::Clixml { message_type, source })?
        };
        let pipeline = message.pipeline_id;
        match message_type {
            MessageType::SessionCapability => {
                let capability = SessionCapability::from_value(&body)?;
                self.server_capability = Some(capability.clone());
                if self.state == RunspacePoolState::NegotiationSent {
                    self.state = RunspacePoolState::NegotiationSucceeded;
                }
                self.events.push_back(Event::SessionCapability(capability));
            }
            MessageType::ApplicationPrivateData => {
                self.events
                    .push_back(Event::ApplicationPrivateData(messages::application_private_data(
                        &body,
                    )?));
                // After a connect, the private data is the last of the server's answers (3.1.4.10.3).
                if self.state == RunspacePoolState::Connecting {
                    self.set_pool_state(RunspacePoolState::Opened, None)?;
                }
            }
            MessageType::RunspacePoolState => {
                let msg = RunspacePoolStateMsg::from_value(&body)?;
                self.set_pool_state(msg.state, msg.error)?;
            }
            MessageType::RunspacePoolInitData => {
                self.events
                    .push_back(Event::InitData(RunspacePoolInitData::from_value(&body)?));
            }
            MessageType::RunspaceAvailability => {
                self.events
                    .push_back(Event::Availability(RunspaceAvailability::from_value(&body)?));
            }
            MessageType::PipelineState => {
                let id = self.known_pipeline(pipeline, message_type)?;
                let msg = PipelineStateMsg::from_value(&body)?;
                self.set_pipeline_state(id, msg.state, msg.error)?;
            }
            MessageType::PipelineOutput => self.record(pipeline, message_type, Stream::Output, body)?,
            MessageType::ErrorRecord => self.record(pipeline, message_type, Stream::Error, body)?,
            MessageType::WarningRecord => self.record(pipeline, message_type, Stream::Warning, body)?,
            MessageType::VerboseRecord => self.record(pipeline, message_type, Stream::Verbose, body)?,
            MessageType::DebugRecord => self.record(pipeline, message_type, Stream::Debug, body)?,
            MessageType::InformationRecord => {
                self.record(pipeline, message_type, Stream::Information, body)?
            }
            MessageType::ProgressRecord => self.record(pipeline, message_type, Stream::Progress, body)?,
            MessageType::RunspacePoolHostCall | MessageType::PipelineHostCall => {
                let target = match message_type {
                    MessageType::PipelineHostCall => Some(self.known_pipeline(pipeline, message_type)?),
                    _ => None,
                };
                let call = HostCall::from_value(&body)?;
                if call.expects_response() {
                    let answer = crate::host::answer(&call);
                    self.host_response(target, &call, answer);
                }
                self.events.push_back(Event::HostCall {
                    pipeline: target,
                    call,
                });
            }
            MessageType::UserEvent => self.events.push_back(Event::UserEvent(body)),
            // PowerShell before protocol 2.2 asks for the key when it first needs a SecureString.
            MessageType::PublicKeyRequest => self.exchange_key()?,
            MessageType::EncryptedSessionKey => {
                let blob = messages::encrypted_session_key(&body)?;
                let exchange = self
                    .exchange_key
                    .as_ref()
                    .ok_or(PoolError::UnexpectedSessionKey)?;
                self.session_key = Some(exchange.decrypt_session_key_base64(&blob)?);
                self.events.push_back(Event::SessionKeyReady);
            }
            // Messages a client does not expect from a server are skipped, as PowerShell skips them.
            _ => self.events.push_back(Event::Ignored { message_type }),
        }
        Ok(())
    }

    fn record(
        &mut self,
        pipeline: Option<Uuid>,
        message_type: MessageType,
        stream: Stream,
        value: PsValue,
    ) -> Result<(), PoolError> {
        let id = self.known_pipeline(pipeline, message_type)?;
        if self.pipelines.get(&id) == Some(&PipelineState::NotStarted) {
            // Output means the pipeline runs, even if its Running state has not arrived yet.
            self.pipelines.insert(id, PipelineState::Running);
        }
        self.events.push_back(Event::Record {
            pipeline: id,
            stream,
            value,
        });
        Ok(())
    }

    fn set_pool_state(&mut self, state: RunspacePoolState, error: Option<PsValue>) -> Result<(), PoolError> {
        if !self.state.can_become(state) {
            return Err(PoolError::InvalidPoolTransition {
                from: self.state,
                to: state,
            });
        }
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::PoolState { state, error });
            if state.is_final() {
                self.closed(state == RunspacePoolState::Broken);
            }
        }
        Ok(())
    }

    fn set_pipeline_state(
        &mut self,
        pipeline: Uuid,
        state: PipelineState,
        error: Option<PsValue>,
    ) -> Result<(), PoolError> {
        let from = self
            .pipelines
            .get(&pipeline)
            .copied()
            .unwrap_or(PipelineState::NotStarted);
        if !from.can_become(state) {
            return Err(PoolError::InvalidPipelineTransition {
                pipeline,
                from,
                to: state,
            });
        }
        if state.is_final() {
            self.pipelines.remove(&pipeline);
        } else {
            self.pipelines.insert(pipeline, state);
        }
        self.events.push_back(Event::PipelineState {
            pipeline,
            state,
            error,
        });
        Ok(())
    }

    fn known_pipeline(&self, pipeline: Option<Uuid>, message_type: MessageType) -> Result<Uuid, PoolError> {
        let id = pipeline.unwrap_or_default();
        if self.pipelines.contains_key(&id) {
            Ok(id)
        } else {
            Err(PoolError::UnknownPipeline {
                pipeline: id,
                message_type,
            })
        }
    }

    fn require(&self, state: RunspacePoolState, action: &'static str) -> Result<(), PoolError> {
        if self.state == state {
            Ok(())
        } else {
            Err(PoolError::InvalidState {
                state: self.state,
                action,
            })
        }
    }

    fn require_pipeline(&self, pipeline: Uuid, message_type: MessageType) -> Result<(), PoolError> {
        self.known_pipeline(Some(pipeline), message_type).map(|_| ())
    }

    fn call_id(&mut self) -> i64 {
        let id = self.next_call_id;
        self.next_call_id += 1;
        id
    }

    fn queue_pool_messages(&mut self, messages: &[(MessageType, PsValue)]) {
        self.queue(None, messages);
    }

    /// Serializes, frames and fragments messages for one target into one [`Outbound`].
    fn queue(&mut self, pipeline: Option<Uuid>, messages: &[(MessageType, PsValue)]) {
        let mut data = Vec::new();
        for (message_type, body) in messages {
            let xml = match body {
                PsValue::Nil => String::new(),
                value => clixml::to_clixml(value),
            };
            let message = Message::new(
                Destination::Server,
                *message_type,
                self.id,
                pipeline,
                xml.into_bytes(),
            );
            self.fragmenter.fragment_into(&message.encode(), &mut data);
        }
        self.outbound.push_back(Outbound {
            pipeline_id: pipeline,
            data,
            prompt_response: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

    use super::*;
    use crate::{clixml::PsObject, crypto::tests as vectors};

    /// Feeds the pool one server message, framed and fragmented as a server would.
    fn feed(pool: &mut RunspacePool, message_type: MessageType, body: PsValue) -> Result<(), PoolError> {
        let xml = match body {
            PsValue::Nil => String::new(),
            value => clixml::to_clixml(&value),
        };
        let message = Message::new(
            Destination::Client,
            message_type,
            pool.id(),
            None,
            xml.into_bytes(),
        );
        let mut data = Vec::new();
        Fragmenter::new().fragment_into(&message.encode(), &mut data);
        pool.receive(&data)
    }

    /// The messages of everything queued to send.
    fn sent(pool: &mut RunspacePool) -> Vec<Message> {
        let mut defragmenter = Defragmenter::new();
        while let Some(outbound) = pool.take_outbound() {
            defragmenter.feed(&outbound.data);
        }
        let mut messages = Vec::new();
        while let Some(bytes) = defragmenter.next_message().unwrap() {
            messages.push(Message::decode(bytes).unwrap());
        }
        messages
    }

    fn events(pool: &mut RunspacePool) -> Vec<Event> {
        std::iter::from_fn(|| pool.next_event()).collect()
    }

    fn opened_pool() -> RunspacePool {
        let mut pool = RunspacePool::new(PoolOptions::default());
        pool.open().unwrap();
        sent(&mut pool);
        feed(
            &mut pool,
            MessageType::SessionCapability,
            SessionCapability::client().to_value(),
        )
        .unwrap();
        let state = PsObject::custom([("RunspaceState", PsValue::I32(2))]);
        feed(&mut pool, MessageType::RunspacePoolState, state.into()).unwrap();
        assert_eq!(pool.state(), RunspacePoolState::Opened);
        events(&mut pool);
        pool
    }

    /// Feeds the pool one server message about `pipeline`.
    fn feed_pipeline(
        pool: &mut RunspacePool,
        pipeline: Uuid,
        message_type: MessageType,
        body: PsValue,
    ) -> Result<(), PoolError> {
        let message = Message::new(
            Destination::Client,
            message_type,
            pool.id(),
            Some(pipeline),
            clixml::to_clixml(&body).into_bytes(),
        );
        let mut data = Vec::new();
        Fragmenter::new().fragment_into(&message.encode(), &mut data);
        pool.receive(&data)
    }

    fn script(text: &str) -> CreatePipeline {
        CreatePipeline {
            commands: vec![crate::messages::Command::script(text)],
            no_input: true,
        }
    }

    fn pipeline_states(events: &[Event]) -> Vec<(Uuid, PipelineState)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::PipelineState { pipeline, state, .. } => Some((*pipeline, *state)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn disconnect_and_reconnect_carry_the_running_pipeline() {
        let mut pool = opened_pool();
        let pipeline = pool.create_pipeline(&script("1..3")).unwrap();
        sent(&mut pool);
        feed_pipeline(&mut pool, pipeline, MessageType::PipelineOutput, PsValue::I32(1)).unwrap();
        assert_eq!(pool.pipeline_state(pipeline), Some(PipelineState::Running));
        events(&mut pool);

        pool.disconnected().unwrap();
        assert_eq!(pool.state(), RunspacePoolState::Disconnected);
        let seen = events(&mut pool);
        assert_eq!(pipeline_states(&seen), [(pipeline, PipelineState::Disconnected)]);
        assert!(
            pool.create_pipeline(&script("1")).is_err(),
            "a disconnected pool runs nothing new"
        );
        assert!(pool.disconnected().is_err(), "disconnected twice");

        pool.reconnected().unwrap();
        assert_eq!(pool.state(), RunspacePoolState::Opened);
        assert_eq!(
            pipeline_states(&events(&mut pool)),
            [(pipeline, PipelineState::Running)]
        );
        // What the server buffered meanwhile arrives as usual.
        feed_pipeline(&mut pool, pipeline, MessageType::PipelineOutput, PsValue::I32(2)).unwrap();
        assert!(matches!(
            events(&mut pool).as_slice(),
            [Event::Record {
                value: PsValue::I32(2),
                ..
            }]
        ));
    }

    #[test]
    fn a_new_client_connects_and_adopts_the_pipeline_left_running() {
        let server_pool = Uuid::new_v4();
        let left_running = Uuid::new_v4();
        let mut pool = RunspacePool::with_id(server_pool, PoolOptions::default());
        assert!(
            pool.adopt_pipeline(left_running).is_err(),
            "nothing to adopt before connecting"
        );
        pool.connect().unwrap();
        let connect: Vec<MessageType> = sent(&mut pool).iter().map(|m| m.message_type).collect();
        assert_eq!(
            connect,
            [MessageType::SessionCapability, MessageType::ConnectRunspacePool]
        );
        pool.adopt_pipeline(left_running).unwrap();
        assert!(
            feed_pipeline(
                &mut pool,
                Uuid::new_v4(),
                MessageType::PipelineOutput,
                PsValue::I32(0)
            )
            .is_err(),
            "a pipeline nobody adopted stays unknown"
        );
        feed(
            &mut pool,
            MessageType::SessionCapability,
            SessionCapability::client().to_value(),
        )
        .unwrap();
        feed(
            &mut pool,
            MessageType::ApplicationPrivateData,
            PsObject::custom([("ApplicationPrivateData", PsValue::Nil)]).into(),
        )
        .unwrap();
        assert_eq!(pool.state(), RunspacePoolState::Opened);
        feed_pipeline(
            &mut pool,
            left_running,
            MessageType::PipelineOutput,
            PsValue::I32(7),
        )
        .unwrap();
        let completed = PsObject::custom([("PipelineState", PsValue::I32(4))]);
        feed_pipeline(
            &mut pool,
            left_running,
            MessageType::PipelineState,
            completed.into(),
        )
        .unwrap();
        let seen = events(&mut pool);
        assert!(seen.iter().any(|e| matches!(
            e,
            Event::Record { pipeline, value: PsValue::I32(7), .. } if *pipeline == left_running
        )));
        assert_eq!(pipeline_states(&seen), [(left_running, PipelineState::Completed)]);
        assert_eq!(pool.running_pipelines(), 0);
    }

    /// The public key blob of the one PUBLIC_KEY message queued.
    fn sent_public_key(pool: &mut RunspacePool) -> Vec<u8> {
        let messages = sent(pool);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].message_type, MessageType::PublicKey);
        assert_eq!(messages[0].destination, Destination::Server);
        let body = clixml::parse(messages[0].xml().unwrap()).unwrap();
        let blob = body.get("PublicKey").and_then(PsValue::as_str).unwrap();
        BASE64.decode(blob).unwrap()
    }

    fn session_key_message(blob: &[u8]) -> PsValue {
        let simple = vectors::server_encrypt_session_key(blob, &vectors::session_key_bytes());
        PsObject::custom([(
            "EncryptedSessionKey",
            PsValue::from(BASE64.encode(simple).as_str()),
        )])
        .into()
    }

    #[test]
    fn public_key_request_starts_the_exchange() {
        let mut pool = opened_pool();
        assert!(matches!(
            pool.encrypt_secure_string("x"),
            Err(PoolError::NoSessionKey)
        ));
        feed(&mut pool, MessageType::PublicKeyRequest, PsValue::Nil).unwrap();
        let blob = sent_public_key(&mut pool);
        assert_eq!(&blob[..12], b"\x06\x02\x00\x00\x00\xa4\x00\x00RSA1");
        // A second request, or call, sends nothing more.
        feed(&mut pool, MessageType::PublicKeyRequest, PsValue::Nil).unwrap();
        pool.exchange_key().unwrap();
        assert!(pool.take_outbound().is_none());
        assert!(!pool.has_session_key());

        feed(
            &mut pool,
            MessageType::EncryptedSessionKey,
            session_key_message(&blob),
        )
        .unwrap();
        assert_eq!(events(&mut pool), vec![Event::SessionKeyReady]);
        assert!(pool.has_session_key());

        // psrpcore's SecureString with that session key, and back.
        let secure = clixml::parse(&format!("<SS>{}</SS>", vectors::SECURE_STRING)).unwrap();
        assert_eq!(pool.decrypt_secure_string(&secure).unwrap(), vectors::PLAINTEXT);
        let ours = pool.encrypt_secure_string(vectors::PLAINTEXT).unwrap();
        assert_eq!(
            clixml::to_clixml(&ours),
            format!("<SS>{}</SS>", vectors::SECURE_STRING)
        );
        assert!(matches!(
            pool.decrypt_secure_string(&PsValue::from("plain")),
            Err(PoolError::NotSecureString("S"))
        ));
        let garbage = PsValue::SecureString(SecureBytes(vec![1, 2, 3]));
        assert!(matches!(
            pool.decrypt_secure_string(&garbage),
            Err(PoolError::Crypto(CryptoError::SecureStringDecryption))
        ));
        // No key material in the pool's Debug.
        let debug = format!("{pool:?}");
        assert!(debug.contains("SessionKey(<AES-256 key>)"), "{debug}");
    }

    #[test]
    fn exchange_key_needs_an_opened_pool() {
        let mut pool = RunspacePool::new(PoolOptions::default());
        assert!(matches!(pool.exchange_key(), Err(PoolError::InvalidState { .. })));
        assert!(pool.take_outbound().is_none());

        let mut pool = opened_pool();
        pool.exchange_key().unwrap();
        let blob = sent_public_key(&mut pool);
        feed(
            &mut pool,
            MessageType::EncryptedSessionKey,
            session_key_message(&blob),
        )
        .unwrap();
        assert_eq!(events(&mut pool), vec![Event::SessionKeyReady]);
        let value = pool.encrypt_secure_string("päss").unwrap();
        assert_eq!(pool.decrypt_secure_string(&value).unwrap(), "päss");
    }

    #[test]
    fn unasked_or_bad_session_keys_are_errors() {
        let mut pool = opened_pool();
        let blob = crate::crypto::ExchangeKey::generate().unwrap().public_key_blob();
        assert!(matches!(
            feed(
                &mut pool,
                MessageType::EncryptedSessionKey,
                session_key_message(&blob)
            ),
            Err(PoolError::UnexpectedSessionKey)
        ));

        let mut pool = opened_pool();
        pool.exchange_key().unwrap();
        sent(&mut pool);
        // Encrypted for another key.
        assert!(matches!(
            feed(
                &mut pool,
                MessageType::EncryptedSessionKey,
                session_key_message(&blob)
            ),
            Err(PoolError::Crypto(_))
        ));
        let not_base64 = PsObject::custom([("EncryptedSessionKey", PsValue::from("%%%"))]).into();
        assert!(matches!(
            feed(&mut pool, MessageType::EncryptedSessionKey, not_base64),
            Err(PoolError::Crypto(CryptoError::Base64 { .. }))
        ));
        let missing = PsObject::custom([("Other", PsValue::I32(1))]).into();
        assert!(matches!(
            feed(&mut pool, MessageType::EncryptedSessionKey, missing),
            Err(PoolError::Body(_))
        ));
        assert!(!pool.has_session_key());
        assert!(events(&mut pool).is_empty());
    }
}
