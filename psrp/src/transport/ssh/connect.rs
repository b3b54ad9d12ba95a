//! Opening a subsystem: TCP, key exchange with the host key check, authentication, channel.

use std::{borrow::Cow, io, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use russh::{
    ChannelMsg, Preferred, SshId,
    client::{self, AuthResult, DisconnectReason, Handle},
    keys::{Algorithm, PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};
use tokio::{net::TcpStream, sync::oneshot, time::Instant};

use super::{
    HostKeyPolicy, KnownHosts, SshAuth, SshConfig, SshError,
    known_hosts::fingerprint,
    stream::{End, EndSignal, Parts, SshSubsystem, Transport, io_failure},
};

/// How long to wait for russh's task to report why it failed after a call saw it go away.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the configured subsystem: TCP (with `TCP_NODELAY`), key exchange and host key check,
/// authentication, session channel, subsystem request, all within `config.connect_timeout`.
///
/// Cancellation safe: dropping the future mid-way closes the socket and ends russh's task.
pub async fn open_subsystem(config: &SshConfig) -> Result<SshSubsystem, SshError> {
    let started = Instant::now();
    let result = match tokio::time::timeout(config.connect_timeout, open(config)).await {
        Ok(result) => result,
        Err(_) => Err(SshError::ConnectTimeout {
            addr: config.address(),
            timeout: config.connect_timeout,
        }),
    };
    match &result {
        Ok(stream) => tracing::debug!(
            addr = %config.address(), user = %config.username, local = %stream.local_addr(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "SSH subsystem open"
        ),
        Err(error) => tracing::debug!(
            addr = %config.address(), user = %config.username, reason = error.reason(), %error,
            "SSH subsystem open failed"
        ),
    }
    result
}

async fn open(config: &SshConfig) -> Result<SshSubsystem, SshError> {
    let tcp = connect_tcp(config).await?;
    tune_socket(&tcp, config);
    let local_addr = tcp.local_addr().map_err(|e| connect_error(config, e))?;
    let peer_addr = tcp.peer_addr().map_err(|e| connect_error(config, e))?;

    let end = Arc::new(EndSignal::default());
    let (kill, killed) = oneshot::channel();
    let handler = ClientHandler {
        policy: config.host_key_policy.clone(),
        host: config.host.clone(),
        port: config.port,
        end: Arc::clone(&end),
    };
    let transport = Transport::new(tcp, killed, Arc::clone(&end));
    let mut handle = client::connect_stream(Arc::new(russh_config(config)), transport, handler)
        .await
        .map_err(|e| e.resolve(&end))?;

    authenticate(&mut handle, config, &end).await?;

    let refused = |reason: String| SshError::SubsystemRefused {
        subsystem: config.subsystem.clone(),
        reason,
    };
    let mut channel = match handle.channel_open_session().await {
        Ok(channel) => channel,
        Err(russh::Error::ChannelOpenFailure(why)) => {
            return Err(refused(format!("the server refused a session channel ({why:?})")));
        }
        Err(e) => return Err(failure(e, &end).await),
    };
    if let Err(e) = channel.request_subsystem(true, config.subsystem.as_str()).await {
        return Err(failure(e, &end).await);
    }
    // Anything the subsystem writes before the server's reply is kept for the first read.
    let mut early = BytesMut::new();
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) => return Err(refused("the server answered failure".to_owned())),
            Some(ChannelMsg::Data { data }) => early.extend_from_slice(&data),
            Some(ChannelMsg::Eof | ChannelMsg::Close) => {
                return Err(refused("the server closed the channel".to_owned()));
            }
            Some(_) => {}
            None => return Err(failure(russh::Error::Disconnect, &end).await),
        }
    }
    let (read_half, write_half) = channel.split();
    Ok(SshSubsystem::new(Parts {
        read_half,
        write_half,
        early_data: Bytes::from(early),
        handle,
        end,
        kill,
        local_addr,
        peer_addr,
    }))
}

fn connect_error(config: &SshConfig, error: io::Error) -> SshError {
    SshError::Connect {
        addr: config.address(),
        source: Arc::new(error),
    }
}

async fn connect_tcp(config: &SshConfig) -> Result<TcpStream, SshError> {
    let resolve_error = |e| SshError::Resolve {
        host: config.host.clone(),
        source: Arc::new(e),
    };
    // An IP address is parsed, not looked up; a name goes to the system resolver.
    let addrs: Vec<_> = tokio::net::lookup_host((config.host.as_str(), config.port))
        .await
        .map_err(resolve_error)?
        .collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
    if addrs.is_empty() {
        return Err(resolve_error(last_error));
    }
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "TCP connect failed");
                last_error = e;
            }
        }
    }
    Err(connect_error(config, last_error))
}

fn tune_socket(tcp: &TcpStream, config: &SshConfig) {
    // Without it, every request/response exchange can stall ~40 ms on Nagle and delayed ACKs.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY");
    }
    // Keepalives only run while russh's task is free to send them; a write stuck on a dead peer's
    // full window is bounded here instead, by the kernel, with the same budget.
    if let Some(interval) = config.keepalive_interval
        && config.keepalive_max > 0
    {
        let budget = interval.saturating_mul(u32::try_from(config.keepalive_max + 1).unwrap_or(u32::MAX));
        if let Err(error) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(budget)) {
            tracing::warn!(%error, "cannot set TCP_USER_TIMEOUT");
        }
    }
}

fn russh_config(config: &SshConfig) -> client::Config {
    let defaults = Preferred::default();
    // As OpenSSH does: prefer the host key algorithms known_hosts has for this host, so that a server
    // with several host keys presents one that can be checked.
    let key = match &config.host_key_policy {
        HostKeyPolicy::KnownHosts(known) => {
            let known = known.algorithms_for(&KnownHosts::lookup_name(&config.host, config.port));
            let rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
            let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (rsa(k) && rsa(a)));
            let (mut first, rest): (Vec<_>, Vec<_>) = defaults.key.iter().cloned().partition(is_known);
            first.extend(rest);
            Cow::Owned(first)
        }
        HostKeyPolicy::AcceptAny => defaults.key.clone(),
    };
    client::Config {
        client_id: SshId::Standard(Cow::Borrowed(concat!("SSH-2.0-psrp_", env!("CARGO_PKG_VERSION")))),
        keepalive_interval: config.keepalive_interval,
        keepalive_max: config.keepalive_max,
        inactivity_timeout: None,
        nodelay: true,
        preferred: Preferred { key, ..defaults },
        ..Default::default()
    }
}

async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    config: &SshConfig,
    end: &EndSignal,
) -> Result<(), SshError> {
    let user = config.username.as_str();
    let (method, result) = match &config.auth {
        SshAuth::Password(password) => (
            "password",
            handle.authenticate_password(user, password.as_str()).await,
        ),
        SshAuth::PrivateKey(key) => {
            let key = Arc::clone(key.inner());
            let hash = if key.algorithm().is_rsa() {
                // rsa-sha2-512/256 when the server lists them in server-sig-algs (OpenSSH does).
                match handle.best_supported_rsa_hash().await {
                    Ok(hash) => hash.flatten(),
                    Err(e) => return Err(failure(e, end).await),
                }
            } else {
                None
            };
            (
                "publickey",
                handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                    .await,
            )
        }
    };
    match result {
        Ok(AuthResult::Success) => Ok(()),
        Ok(AuthResult::Failure {
            remaining_methods,
            partial_success,
        }) => {
            if partial_success {
                tracing::debug!(user, "the server wants a further authentication method");
            }
            Err(SshError::AuthFailed {
                user: user.to_owned(),
                methods_tried: vec![method.to_owned()],
                methods_allowed: remaining_methods
                    .iter()
                    .map(|m| <&str>::from(m).to_owned())
                    .collect(),
            })
        }
        Err(e) => Err(failure(e, end).await),
    }
}

/// The error for a russh call that failed: when the connection went away under it, the reason
/// russh's task reports (it closes its queues before it says why, hence the short wait).
async fn failure(error: russh::Error, end: &EndSignal) -> SshError {
    if matches!(
        error,
        russh::Error::SendError | russh::Error::Disconnect | russh::Error::IO(_)
    ) {
        let _ = tokio::time::timeout(REPORT_TIMEOUT, end.wait_task_end()).await;
        if let Some(End::Failed(e)) = end.ended() {
            return e;
        }
    }
    russh_failure(error, end.observed())
}

fn russh_failure(error: russh::Error, observed: Option<SshError>) -> SshError {
    use russh::Error as E;
    match error {
        E::KeepaliveTimeout | E::InactivityTimeout => SshError::KeepaliveTimeout,
        E::IO(e) => observed.unwrap_or_else(|| io_failure(&e)),
        E::Disconnect | E::HUP | E::SendError | E::ConnectionTimeout => {
            observed.unwrap_or_else(|| SshError::Disconnected {
                reason: error.to_string(),
            })
        }
        other => SshError::Protocol {
            message: other.to_string(),
        },
    }
}

/// russh's handler: checks the host key and reports how the connection ended.
pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
    host: String,
    port: u16,
    end: Arc<EndSignal>,
}

#[derive(Debug)]
pub(crate) enum HandlerError {
    HostKey(SshError),
    Russh(russh::Error),
}

impl From<russh::Error> for HandlerError {
    fn from(error: russh::Error) -> Self {
        HandlerError::Russh(error)
    }
}

impl HandlerError {
    fn resolve(self, end: &EndSignal) -> SshError {
        match self {
            HandlerError::HostKey(e) => e,
            HandlerError::Russh(e) => russh_failure(e, end.observed()),
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let name = KnownHosts::lookup_name(&self.host, self.port);
        let result = match (server_key, &self.policy) {
            (PublicKeyOrCertificate::PublicKey { key, .. }, HostKeyPolicy::AcceptAny) => {
                tracing::debug!(host = %name, key = %fingerprint(key), "host key accepted unchecked (AcceptAny)");
                Ok(())
            }
            (PublicKeyOrCertificate::PublicKey { key, .. }, HostKeyPolicy::KnownHosts(known)) => {
                known.verify(&self.host, self.port, key)
            }
            // Not negotiated (no certificate algorithms are offered); refused if a server sends one.
            (PublicKeyOrCertificate::Certificate(cert), _) => Err(SshError::HostKeyUnknown {
                host: name,
                fingerprint: format!(
                    "certificate for {}",
                    fingerprint(&cert.public_key().clone().into())
                ),
            }),
        };
        result.map(|()| true).map_err(HandlerError::HostKey)
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        let error = match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                let message = info.message.trim();
                SshError::Disconnected {
                    reason: if message.is_empty() {
                        format!("the server disconnected ({:?})", info.reason_code)
                    } else {
                        format!("the server disconnected ({:?}): {message}", info.reason_code)
                    },
                }
            }
            DisconnectReason::Error(e) => e.resolve(&self.end),
        };
        self.end.finish(End::Failed(error));
        Ok(())
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        self.end.task_ended();
    }
}
