//! PowerShell sessions over WS-Management: the same [`Session`] and [`PipelineHandle`] as over
//! SSH, joined to the sans-IO SOAP layer ([`crate::wsman`]) and the HTTP transport
//! ([`crate::transport::wsman`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), psrp::session::SessionError> {
//! use psrp::session::{Session, SessionOptions, WsmanSessionConfig};
//! use psrp::transport::wsman::{Credentials, WsmanAuth, WsmanConfig};
//!
//! let transport = WsmanConfig::new("web01.example.com", WsmanAuth::Ntlm(Credentials::new("EXAMPLE\\ops", "...")));
//! let config = WsmanSessionConfig::new(transport);
//! let session = Session::open_wsman(&config, SessionOptions::default()).await?;
//! // Write these down at once: a new process needs them to connect to the shell.
//! let (shell_id, wsman_session_id) = (session.shell_id(), session.wsman_session_id());
//! let outcome = session.run_script("Write-Output 1", Vec::<(String, _)>::new()).await?.collect().await;
//! # let _ = (shell_id, wsman_session_id, outcome);
//! session.close().await
//! # }
//! ```
//!
//! # What runs when
//!
//! - [`Session::open_wsman`]: Create, whose `creationXml` carries SESSION_CAPABILITY and
//!   INIT_RUNSPACEPOOL (MS-PSRP 3.1.5.3.1); then the pool's Receive until the pool is Opened. The
//!   ShellId is the runspace pool's id ([`Session::instance_id`]), chosen here as PowerShell does;
//!   the `wsmv:SessionId` is [`WsmanSessionConfig::session_id`] or a new one (the ShellId too can
//!   be given, [`WsmanSessionConfig::shell_id`], to record it before the open). Both are in
//!   [`SessionStatus`] (and [`Session::shell_id`],
//!   [`Session::wsman_session_id`]) from the first status on, before any command. An open that
//!   fails after the Create deletes the shell it made (best effort).
//! - While the pool is open, one Receive of the pool is always outstanding (a long poll bounded by
//!   [`WsmanSessionConfig::receive_timeout`]; the server's `TimedOut` fault means "ask again"), as
//!   PowerShell's client keeps one: pool messages (host calls, key exchange) arrive through it, and
//!   it tells the server the client is there.
//! - A pipeline: Command with CREATE_PIPELINE in its Arguments (CommandId = the pipeline id; what
//!   does not fit goes in Sends), then one Receive at a time for that command until its final
//!   state (`CommandState Done`). Input and host call answers go as Sends, one at a time per pool
//!   or pipeline so they stay in order. [`PipelineHandle::stop`] is Signal
//!   `powershell/signal/crtl_c`. Requests travel concurrently over the transport's pooled
//!   connections ([`WsmanConfig::max_connections`](crate::transport::wsman::WsmanConfig)): a
//!   Signal does not wait behind a Receive.
//! - [`Session::close`] is Delete: the server stops what runs and closes the pool.
//! - The SSH facade's contract holds: one pipeline at a time, invoke calls served in order,
//!   availability Busy from the Command to the final state, `open_timeout` over the whole open,
//!   `operation_timeout` over each request that is not a Receive long poll (and added to the
//!   long poll's own bound), a stopped pipeline's final state awaited within `operation_timeout`.
//!
//! # Persist before acknowledge
//!
//! A server hands each piece of output out once: what a ReceiveResponse carried is gone from its
//! buffer, and the client's next Receive is what tells it the client has it (see
//! [`crate::wsman::receive`]). So a pipeline's next Receive goes only once the events of the
//! previous one are acknowledged:
//!
//! - [`PipelineHandle::next_batch`] returns exactly the events of one ReceiveResponse; the caller
//!   saves them and then calls [`EventBatch::acknowledge`](super::EventBatch::acknowledge). Nothing
//!   more is fetched from the server while a batch is unsaved, so a crash puts at most the batch in
//!   hand at risk: everything after it stays with the server (the shell keeps running, its output
//!   buffered per BufferMode), and the next process connects ([`Session::connect_wsman`]) and
//!   receives it, complete and in order. The batch in hand itself the server has handed out; the
//!   robust-connection cache (below) closes that gap where the server keeps responses: each batch
//!   names the OperationID of the pipeline's next Receive
//!   ([`EventBatch::next_receive_operation`](super::EventBatch::next_receive_operation)); saved
//!   with the batch, it lets the next process [`Session::connect_wsman_resuming`] with a first
//!   Receive that retransmits the lost one, and the server hands its output out again. (The first
//!   Receive of a pipeline goes right after its Command, before any batch could name it: a crash
//!   before the first batch is saved is not covered.)
//! - [`PipelineHandle::next_event`] acknowledges a response's events when the last of them has been
//!   taken (and it is called again): the Receive rate follows the consumer.
//! - Every Receive is a robust operation (MS-WSMV 3.1.4.1.39, a fresh `wsmv:OperationID`): when the
//!   server shows it keeps responses (it echoes the OperationID) and the connection carrying a
//!   Receive breaks or times out, the same request is sent again as a retransmission for up to
//!   30 s, and the server answers with the response it kept, not with new output.
//!
//! # Disconnect, reconnect, connect
//!
//! - [`Session::disconnect`]`(idle_timeout, buffer_mode)`: waits for a pipeline being created and
//!   for outstanding Sends, then Disconnect (MS-PSRP 3.1.4.9). The pending Receives end (with what
//!   the server had, then `ShellDisconnected`), and only then are the pool and a running pipeline
//!   Disconnected: the handle gets that output, then `State { Disconnected }`, before `disconnect`
//!   returns. A caller that hands the shell to another process (a graceful operator stop) reads
//!   and saves the handle up to that event first: what the server handed out is not handed out
//!   again. New invokes wait in the queue.
//! - [`Session::reconnect`]: Reconnect from the same client (same `wsmv:SessionId`); the pool is
//!   Opened, the pipeline Running again and the output buffered meanwhile comes through its handle.
//! - [`Session::connect_wsman`]: a NEW client (another process, after a crash or a leader change)
//!   takes over a disconnected shell by its id: Enumerate of its commands, Connect with
//!   SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL in `connectXml` (the pool's id is the ShellId), the
//!   `connectResponseXml` into the pool, Receive until Opened; then per pipeline left running a
//!   Connect of the command and its Receive loop (Receive-PSSession): its buffered output arrives
//!   complete, in order, once. Returns the session and those pipelines' handles.
//!   [`Session::connect_wsman_resuming`] does the same after a crash, first fetching again the
//!   responses the dead process received but did not save (above).
//! - [`list_shells`] lists the user's PowerShell shells on a host (Get-PSSession -ComputerName);
//!   [`delete_shell`] removes one by id (orphan cleanup).
//!
//! # Differences from SSH
//!
//! - Dropping the [`Session`] ends the task and aborts its requests without a Delete: the server
//!   keeps the shell until its idle timeout (a vanished WinRM client; MS-WSMV 3.1.6.5), so another
//!   process can still connect to it. Over SSH the runspace dies with the connection. Call
//!   [`Session::close`] to free the remote process.
//! - Dropping a [`PipelineHandle`] stops its pipeline (Signal), as over SSH; its remaining output is
//!   received and discarded.
//! - There is no read backpressure by queue length: the next Receive waits for the acknowledgement
//!   of the previous response instead.
//! - Disconnect and reconnect exist (over SSH they are [`SessionError::Unsupported`]).

mod actor;
mod error;
mod exchange;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use uuid::Uuid;

pub use self::error::{CODE_OPERATION_ABORTED, CODE_SHELL_DISCONNECTED, WsmanFailure};
use self::{
    actor::{Actor, Opened},
    exchange::Exchange,
};
use super::{PipelineHandle, Session, SessionError, SessionOptions, SessionStatus};
use crate::{
    pool::RunspacePool,
    transport::wsman::{WsmanConfig, WsmanTransport},
    wsman::{
        BufferMode, CommandInfo, CreatePowerShell, ShellInfo, WsmanClient, namespaces::action,
        parse_commands, parse_connect_response, parse_create_response, parse_empty_response, parse_shells,
        shell::DEFAULT_MAX_ENVELOPE_SIZE,
    },
};

/// The configuration name PowerShell connects to by default.
pub const DEFAULT_CONFIGURATION: &str = "Microsoft.PowerShell";
/// The least idle timeout WS-Management accepts for a shell (MS-WSMV 2.2.4.23).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to open PowerShell shells over WS-Management.
#[derive(Debug, Clone)]
pub struct WsmanSessionConfig {
    /// Host, port, TLS, authentication.
    pub transport: WsmanConfig,
    /// The session configuration (`Microsoft.PowerShell`, a JEA endpoint): the resource URI
    /// `http://schemas.microsoft.com/powershell/<name>`.
    pub configuration_name: String,
    /// The `wsmv:SessionId` of every request. Keep it beside the shell id: Reconnect is only for
    /// the client session that disconnected. `None`: a new one per open (see
    /// [`Session::wsman_session_id`]).
    pub session_id: Option<Uuid>,
    /// The ShellId (= runspace pool id) [`Session::open_wsman`] creates; `None`: a new one. A
    /// caller that records it before opening (the operator, in the PSSession's status) knows the
    /// shell even if it crashes during the open. Use a fresh id for every open.
    pub shell_id: Option<Uuid>,
    /// The shell's idle timeout sent on Create (`rsp:IdleTimeOut`), raised to 60 s, the least a
    /// server takes; `None`: the server's default (2 h on Windows).
    pub idle_timeout: Option<Duration>,
    /// OutputBufferingMode sent on Create: what the server does with output while no client
    /// receives it.
    pub buffer_mode: BufferMode,
    /// `wsman:MaxEnvelopeSize` of every request; fragments are cut so that each fits one Send.
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout` of a Receive: how long the server holds a long poll without output.
    pub receive_timeout: Duration,
}

impl WsmanSessionConfig {
    /// `Microsoft.PowerShell`, a new session id, the server's idle timeout, Block, 150 KiB
    /// envelopes (Windows' default), 20 s Receive long polls (pypsrp's).
    pub fn new(transport: WsmanConfig) -> Self {
        WsmanSessionConfig {
            transport,
            configuration_name: DEFAULT_CONFIGURATION.to_owned(),
            session_id: None,
            shell_id: None,
            idle_timeout: None,
            buffer_mode: BufferMode::Block,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            receive_timeout: Duration::from_secs(20),
        }
    }

    fn client(&self, session_id: Uuid) -> WsmanClient {
        let mut client = WsmanClient::powershell(self.transport.url(), &self.configuration_name, session_id);
        client.max_envelope_size = self.max_envelope_size;
        client.operation_timeout = self.receive_timeout;
        client
    }

    fn exchange(&self, operation_timeout: Duration) -> Result<Exchange, SessionError> {
        let transport = WsmanTransport::new(self.transport.clone()).map_err(wsman_error)?;
        let session_id = self.session_id.unwrap_or_else(Uuid::new_v4);
        Ok(Exchange::new(
            self.client(session_id),
            transport,
            operation_timeout,
        ))
    }
}

fn wsman_error(error: impl Into<WsmanFailure>) -> SessionError {
    SessionError::Wsman(error.into())
}

/// The pool options with the fragment size a Command and a Send can carry.
fn pool_options(options: &SessionOptions, client: &WsmanClient, shell_id: Uuid) -> crate::pool::PoolOptions {
    let command = client.command(shell_id, Uuid::max(), &[]).payload_capacity();
    let send = client.max_send_payload(shell_id);
    let mut pool = options.pool.clone();
    pool.max_fragment_size = pool.max_fragment_size.min(command).min(send);
    pool
}

impl Session {
    /// Creates a PowerShell shell (a runspace pool) over WS-Management and waits until it is
    /// Opened, within `options.open_timeout` (the transport's connect timeout applies too).
    pub async fn open_wsman(
        config: &WsmanSessionConfig,
        options: SessionOptions,
    ) -> Result<Session, SessionError> {
        let deadline = Instant::now() + options.open_timeout;
        let exchange = config.exchange(options.operation_timeout)?;
        let shell_id = config.shell_id.unwrap_or_else(Uuid::new_v4);
        let mut pool = RunspacePool::with_id(shell_id, pool_options(&options, &exchange.client, shell_id));
        pool.open()?;
        let mut creation_xml = Vec::new();
        while let Some(outbound) = pool.take_outbound() {
            creation_xml.extend_from_slice(&outbound.data);
        }
        let mut create = CreatePowerShell::new(shell_id, creation_xml);
        create.idle_timeout = config.idle_timeout.map(|idle| idle.max(MIN_IDLE_TIMEOUT));
        create.buffer_mode = Some(config.buffer_mode);
        let envelope = exchange.client.create(&create);
        let created =
            match tokio::time::timeout_at(deadline, exchange.call(&envelope, parse_create_response)).await {
                Ok(created) => created.map_err(wsman_error)?,
                Err(_) => return Err(SessionError::OpenTimeout(options.open_timeout)),
            };
        if created.body.shell_id != shell_id {
            // MS-PSRP 3.1.5.3.1: the ShellId is the pool's; a server that picks another breaks it.
            let _ = delete_with(&exchange, created.body.shell_id).await;
            return Err(SessionError::Wsman(WsmanFailure::Soap(
                crate::wsman::WsmanError::Invalid {
                    what: "ShellId of the CreateResponse (not the runspace pool's id)",
                    value: created.body.shell_id.to_string(),
                },
            )));
        }
        let result = Self::start_wsman(exchange.clone(), pool, shell_id, options, deadline, &[]).await;
        if result.is_err() {
            // The shell exists but is of no use: free it rather than leave it to the idle timeout.
            let cleanup = async move {
                if let Err(error) = delete_with(&exchange, shell_id).await {
                    tracing::debug!(shell = %shell_id, reason = error.reason(), %error, "deleting the shell of a failed open");
                }
            };
            tokio::spawn(cleanup);
        }
        result.map(|(session, _)| session)
    }

    /// Connects a NEW client to a disconnected shell made by another client (or an earlier
    /// process) with the same credentials: Connect-PSSession plus Receive-PSSession. Returns the
    /// session, Opened, and the handles of the pipelines that were left running (or ended with
    /// output not yet received), in the server's order: their buffered output comes through them
    /// complete and in order. Use the same [`WsmanSessionConfig::session_id`] as before if you have
    /// it; the server records the connecting one.
    pub async fn connect_wsman(
        config: &WsmanSessionConfig,
        shell_id: Uuid,
        options: SessionOptions,
    ) -> Result<(Session, Vec<PipelineHandle>), SessionError> {
        Self::connect_wsman_resuming(config, shell_id, options, &[]).await
    }

    /// [`Self::connect_wsman`] for a process taking over from one that died: `resume` names, per
    /// pipeline, the OperationID its last saved batch gave for the next Receive
    /// ([`EventBatch::next_receive_operation`](super::EventBatch::next_receive_operation)). That
    /// pipeline's first Receive retransmits it: if the dead process had sent it and the server kept
    /// its response (robust connections), the output the dead process received but did not save
    /// comes again; if not, it is an ordinary Receive. Nothing comes twice: a saved batch's Receive
    /// is never the one named.
    pub async fn connect_wsman_resuming(
        config: &WsmanSessionConfig,
        shell_id: Uuid,
        options: SessionOptions,
        resume: &[(Uuid, Uuid)],
    ) -> Result<(Session, Vec<PipelineHandle>), SessionError> {
        let deadline = Instant::now() + options.open_timeout;
        let exchange = config.exchange(options.operation_timeout)?;
        let bounded = async {
            let commands = enumerate_commands(&exchange, shell_id).await?;
            let mut pool =
                RunspacePool::with_id(shell_id, pool_options(&options, &exchange.client, shell_id));
            pool.connect()?;
            let mut connect_xml = Vec::new();
            while let Some(outbound) = pool.take_outbound() {
                connect_xml.extend_from_slice(&outbound.data);
            }
            let envelope = exchange.client.connect(shell_id, &connect_xml);
            let connected = exchange
                .call(&envelope, parse_connect_response)
                .await
                .map_err(wsman_error)?;
            for command in &commands {
                pool.adopt_pipeline(command.command_id)?;
            }
            if let Some(xml) = connected.body.connect_response_xml {
                pool.receive(&xml)?;
            }
            Ok::<_, SessionError>((pool, commands))
        };
        let (pool, commands) = match tokio::time::timeout_at(deadline, bounded).await {
            Ok(result) => result?,
            Err(_) => return Err(SessionError::OpenTimeout(options.open_timeout)),
        };
        let adopt: Vec<(Uuid, Option<Uuid>)> = commands
            .iter()
            .map(|c| {
                let operation = resume.iter().find(|(p, _)| *p == c.command_id).map(|(_, o)| *o);
                (c.command_id, operation)
            })
            .collect();
        Self::start_wsman(exchange, pool, shell_id, options, deadline, &adopt).await
    }

    async fn start_wsman(
        exchange: Exchange,
        pool: RunspacePool,
        shell_id: Uuid,
        options: SessionOptions,
        deadline: Instant,
        adopt: &[(Uuid, Option<Uuid>)],
    ) -> Result<(Session, Vec<PipelineHandle>), SessionError> {
        let instance_id = pool.id();
        let (requests, requests_rx) = mpsc::channel(16);
        let mut initial = SessionStatus::opening();
        initial.shell_id = Some(shell_id);
        initial.wsman_session_id = Some(exchange.client.session_id);
        let (status_tx, status) = watch::channel(initial);
        let (opened_tx, opened_rx) = oneshot::channel();
        let actor = Actor::new(
            pool,
            shell_id,
            exchange,
            options,
            deadline,
            requests_rx,
            requests.downgrade(),
            status_tx,
            opened_tx,
            adopt,
        );
        let span = tracing::debug_span!("psrp_wsman_session", shell = %shell_id);
        tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
        match opened_rx.await {
            Ok(Ok(Opened {
                protocol_version,
                adopted,
            })) => Ok((
                Session {
                    requests,
                    status,
                    instance_id,
                    protocol_version,
                },
                adopted,
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SessionError::Closed),
        }
    }
}

async fn delete_with(exchange: &Exchange, shell_id: Uuid) -> Result<(), SessionError> {
    exchange
        .call(&exchange.client.delete(shell_id), |b| {
            parse_empty_response(b, action::DELETE_RESPONSE)
        })
        .await
        .map(|_| ())
        .map_err(wsman_error)
}

/// Enumerate of a shell's commands, with the Pulls a long list needs.
async fn enumerate_commands(exchange: &Exchange, shell_id: Uuid) -> Result<Vec<CommandInfo>, SessionError> {
    let mut page = exchange
        .call(&exchange.client.enumerate_commands(shell_id), parse_commands)
        .await
        .map_err(wsman_error)?
        .body;
    let mut commands = std::mem::take(&mut page.items);
    // Bounded: a server that never ends its sequence does not keep us here.
    for _ in 0..1000 {
        if !page.needs_pull() {
            break;
        }
        let context = page.context.clone().unwrap_or_default();
        let envelope = exchange
            .client
            .pull(crate::wsman::namespaces::resource::COMMANDS, &context);
        page = exchange
            .call(&envelope, parse_commands)
            .await
            .map_err(wsman_error)?
            .body;
        commands.append(&mut page.items);
    }
    Ok(commands)
}

/// The user's PowerShell shells on the host, connected and disconnected, made by any client
/// (Get-PSSession -ComputerName). Bounded by `timeout` per request.
pub async fn list_shells(
    config: &WsmanSessionConfig,
    timeout: Duration,
) -> Result<Vec<ShellInfo>, SessionError> {
    let exchange = config.exchange(timeout)?;
    let mut page = exchange
        .call(&exchange.client.enumerate_shells(), parse_shells)
        .await
        .map_err(wsman_error)?
        .body;
    let mut shells = std::mem::take(&mut page.items);
    for _ in 0..1000 {
        if !page.needs_pull() {
            break;
        }
        let context = page.context.clone().unwrap_or_default();
        let envelope = exchange
            .client
            .pull(crate::wsman::namespaces::resource::SHELLS, &context);
        page = exchange
            .call(&envelope, parse_shells)
            .await
            .map_err(wsman_error)?
            .body;
        shells.append(&mut page.items);
    }
    shells.retain(ShellInfo::is_powershell);
    Ok(shells)
}

/// Deletes a shell by id (orphan cleanup: a shell whose session object is gone): the server stops
/// its pipelines and frees its process. A shell that does not exist is
/// `Wsman(Soap(Fault(ShellNotFound)))`, reason `ShellNotFound`.
pub async fn delete_shell(
    config: &WsmanSessionConfig,
    shell_id: Uuid,
    timeout: Duration,
) -> Result<(), SessionError> {
    let exchange = config.exchange(timeout)?;
    delete_with(&exchange, shell_id).await
}
