//! The transport: a pool of authenticated keep-alive connections and the request/response cycle.

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::Semaphore,
    task::JoinHandle,
    time::Instant,
};

use super::{
    CERTIFICATE_AUTH_HEADER, WsmanAuth, WsmanConfig, WsmanHttpError,
    auth::{NEGOTIATE, SecurityContext},
    encryption, tls,
};

const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";
const USER_AGENT: &str = concat!("pssession-operator-psrp/", env!("CARGO_PKG_VERSION"));
/// Legs of an authentication exchange before giving up (NTLM needs 2, Kerberos 1 or 2).
const MAX_AUTH_ROUNDS: usize = 4;

/// A response: the HTTP status and the body (decrypted when the session is encrypted). Status 200,
/// or a SOAP fault with its status (WinRM sends faults with 500, some with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsmanResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Posts SOAP envelopes to one WS-Management endpoint. Cheap to clone (an `Arc`); usable from many
/// tasks at once (see the module docs on connections).
#[derive(Clone, Debug)]
pub struct WsmanTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: WsmanConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    idle: Mutex<Vec<Connection>>,
    slots: Semaphore,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsmanTransport")
            .field("url", &self.config.url())
            .field("auth", &self.config.auth.scheme())
            .field("user", &self.config.auth.user())
            .finish_non_exhaustive()
    }
}

impl WsmanTransport {
    /// Checks the configuration and prepares TLS; connects on the first [`post`](Self::post).
    ///
    /// Refuses Basic over plain HTTP without `allow_unencrypted` ([`WsmanHttpError::UnencryptedRefused`]),
    /// Certificate without HTTPS, Negotiate/Kerberos without the `kerberos` feature, and PEM that
    /// does not parse ([`WsmanHttpError::InvalidConfig`]).
    pub fn new(config: WsmanConfig) -> Result<Self, WsmanHttpError> {
        let invalid = |reason: &str| WsmanHttpError::InvalidConfig {
            reason: reason.to_owned(),
        };
        if config.max_connections == 0 {
            return Err(invalid("max_connections must be at least 1"));
        }
        if !config.path.starts_with('/') {
            return Err(invalid("the path must start with /"));
        }
        match &config.auth {
            WsmanAuth::Basic(_) if !config.use_ssl && !config.allow_unencrypted => {
                return Err(WsmanHttpError::UnencryptedRefused { scheme: "Basic" });
            }
            WsmanAuth::Basic(_) if !config.use_ssl => {
                tracing::warn!(
                    host = %config.host, port = config.port, allow_unencrypted = true,
                    "Basic authentication over plain HTTP: the password crosses the network in clear text"
                );
            }
            WsmanAuth::Certificate(_) if !config.use_ssl => {
                return Err(invalid("Certificate authentication needs HTTPS (useSSL)"));
            }
            WsmanAuth::Negotiate { .. } | WsmanAuth::Kerberos { .. } if !cfg!(feature = "kerberos") => {
                return Err(invalid(
                    "Negotiate and Kerberos authentication need psrp built with the `kerberos` feature",
                ));
            }
            _ => {}
        }
        let (tls, server_name) = if config.use_ssl {
            let client_cert = match &config.auth {
                WsmanAuth::Certificate(cert) => Some(cert),
                _ => None,
            };
            let server_name = rustls_pki_types::ServerName::try_from(config.host.clone())
                .map_err(|_| invalid(&format!("{:?} is not a valid TLS server name", config.host)))?;
            (
                Some(tls::client_config(&config.tls, client_cert, &config.host)?),
                Some(server_name),
            )
        } else {
            (None, None)
        };
        let slots = Semaphore::new(config.max_connections);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                server_name,
                idle: Mutex::new(Vec::new()),
                slots,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    pub fn config(&self) -> &WsmanConfig {
        &self.inner.config
    }

    /// POSTs one envelope and returns the status and body. `timeout` bounds everything (waiting for
    /// a free connection, connecting, authenticating, the response); give more than the envelope's
    /// OperationTimeout so a Receive long-poll ends on the server's side first. On timeout the
    /// connection is closed.
    ///
    /// Cancellation safe: dropping the future closes the connection it used.
    pub async fn post(&self, envelope: Bytes, timeout: Duration) -> Result<WsmanResponse, WsmanHttpError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, self.inner.post(envelope)).await {
            Ok(result) => result,
            Err(_) => Err(WsmanHttpError::Timeout { after: timeout }),
        };
        match &result {
            Ok(response) => tracing::trace!(
                url = %self.inner.config.url(), status = response.status, bytes = response.body.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "WSMan POST"
            ),
            Err(error) => tracing::debug!(
                url = %self.inner.config.url(), reason = error.reason(), %error, "WSMan POST failed"
            ),
        }
        result
    }

    /// Connections open and idle now (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.inner.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// The bytes under HTTP: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One keep-alive connection with its security context.
struct Connection {
    id: u64,
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    security: Option<SecurityContext>,
    /// Messages are sealed (NTLM/Kerberos over HTTP).
    sealed: bool,
    idle_since: Instant,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A response as it came off the wire.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum SendError {
    /// The request never left: the connection was already closed. Safe to send elsewhere.
    NotSent,
    Failed(WsmanHttpError),
}

impl Inner {
    async fn post(&self, envelope: Bytes) -> Result<WsmanResponse, WsmanHttpError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| WsmanHttpError::protocol("the transport is closed"))?;
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.open().await?,
        };
        let mut retried = false;
        loop {
            // Sealed anew for each attempt: sealing advances the connection's sequence numbers.
            let request = self.request(&mut conn, &envelope)?;
            match conn.send(request, self).await {
                // The server dropped the connection's authentication (its context expired, a
                // restart behind a balancer): it did not process the request, so one retry on a
                // freshly authenticated connection is safe. A second 401 is a real refusal.
                Ok(raw) if raw.status == StatusCode::UNAUTHORIZED && conn.security.is_some() && !retried => {
                    tracing::debug!(
                        conn = conn.id,
                        "the server refused an authenticated connection; re-authenticating"
                    );
                }
                Ok(raw) => {
                    let response = self.response(&mut conn, raw)?;
                    self.put_idle(conn);
                    return Ok(response);
                }
                // A kept-alive connection the server had closed: the request never left.
                Err(SendError::NotSent) if !retried => {
                    tracing::debug!(
                        conn = conn.id,
                        "idle connection was closed by the server; reconnecting"
                    );
                }
                Err(SendError::NotSent) => {
                    return Err(self.lost("the new connection closed before the request went out"));
                }
                Err(SendError::Failed(e)) => return Err(e),
            }
            retried = true;
            drop(conn);
            conn = self.open().await?;
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < self.config.idle_timeout && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Connection) {
        if conn.sender.is_closed() {
            return;
        }
        conn.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    fn lost(&self, reason: impl Into<String>) -> WsmanHttpError {
        WsmanHttpError::ConnectionLost {
            addr: self.config.address(),
            reason: reason.into(),
        }
    }

    fn auth_failed(&self, reason: impl Into<String>) -> WsmanHttpError {
        WsmanHttpError::AuthFailed {
            user: self.config.auth.user().to_owned(),
            scheme: self.config.auth.scheme(),
            reason: reason.into(),
        }
    }

    /// A POST with the headers every request carries.
    fn base_request(&self, body: Bytes) -> http::request::Builder {
        let builder = Request::post(self.config.path.as_str())
            .header(header::HOST, self.config.address())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_LENGTH, body.len());
        match &self.config.auth {
            WsmanAuth::Basic(credentials) => {
                let mut plain = zeroize::Zeroizing::new(Vec::new());
                plain.extend_from_slice(credentials.username.as_bytes());
                plain.push(b':');
                plain.extend_from_slice(credentials.password.expose().as_bytes());
                let value = zeroize::Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(&*plain)
                ));
                match HeaderValue::from_str(&value) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        builder.header(header::AUTHORIZATION, value)
                    }
                    Err(_) => builder,
                }
            }
            WsmanAuth::Certificate(_) => builder.header(header::AUTHORIZATION, CERTIFICATE_AUTH_HEADER),
            _ => builder,
        }
    }

    /// The request for an envelope on `conn`: sealed when the connection seals.
    fn request(
        &self,
        conn: &mut Connection,
        envelope: &Bytes,
    ) -> Result<Request<Full<Bytes>>, WsmanHttpError> {
        let (content_type, body) = match conn.security.as_mut().filter(|_| conn.sealed) {
            Some(security) => {
                let (signature, sealed) = security
                    .wrap(envelope)
                    .map_err(|e| WsmanHttpError::protocol(format!("cannot seal the message: {e}")))?;
                let body = encryption::frame(security.protocol, envelope.len(), &signature, &sealed);
                (encryption::content_type(security.protocol), Bytes::from(body))
            }
            None => (SOAP_CONTENT_TYPE.to_owned(), envelope.clone()),
        };
        self.base_request(body.clone())
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| WsmanHttpError::protocol(format!("cannot build the request: {e}")))
    }

    /// Turns a raw response into the caller's answer, unsealing it when needed.
    fn response(&self, conn: &mut Connection, raw: Raw) -> Result<WsmanResponse, WsmanHttpError> {
        let content_type = raw
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if raw.status == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(&raw.headers));
        }
        let (body, soap) = if encryption::is_encrypted(&content_type) {
            let security = conn.security.as_mut().ok_or_else(|| {
                WsmanHttpError::protocol("an encrypted response on a connection without a security context")
            })?;
            (unseal(security, &raw.body)?, true)
        } else {
            if conn.sealed && !raw.body.is_empty() && raw.status.is_success() {
                return Err(WsmanHttpError::protocol(
                    "the server answered an encrypted session in clear text",
                ));
            }
            let soap = content_type
                .to_ascii_lowercase()
                .starts_with("application/soap+xml");
            (raw.body, soap)
        };
        if raw.status == StatusCode::OK || (soap && !body.is_empty()) {
            return Ok(WsmanResponse {
                status: raw.status.as_u16(),
                body,
            });
        }
        Err(WsmanHttpError::HttpStatus {
            status: raw.status.as_u16(),
            body,
        })
    }

    /// A 401 on a request: a scheme the server does not offer, or credentials it refused.
    fn unauthorized(&self, headers: &HeaderMap) -> WsmanHttpError {
        let offered = offered_schemes(headers);
        let wanted: &[&str] = match &self.config.auth {
            WsmanAuth::Basic(_) => &["basic"],
            WsmanAuth::Ntlm(_) => &["negotiate", "ntlm"],
            WsmanAuth::Negotiate { .. } => &["negotiate"],
            WsmanAuth::Kerberos { .. } => &["negotiate", "kerberos"],
            // Certificate authentication is not announced in WWW-Authenticate.
            WsmanAuth::Certificate(_) => {
                return self.auth_failed("the server refused the client certificate");
            }
        };
        if !offered.is_empty()
            && !offered
                .iter()
                .any(|o| wanted.contains(&o.to_ascii_lowercase().as_str()))
        {
            return WsmanHttpError::AuthUnsupported {
                scheme: self.config.auth.scheme(),
                offered,
            };
        }
        self.auth_failed(
            "the server answered 401: wrong user name or password, or the account may not log on",
        )
    }

    async fn open(&self) -> Result<Connection, WsmanHttpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tcp = self.connect_tcp().await?;
        let mut channel_binding = None;
        let io: Box<dyn Io> = match (&self.tls, &self.server_name) {
            (Some(tls), Some(name)) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                let handshake = connector.connect(name.clone(), tcp);
                match tokio::time::timeout(self.config.connect_timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        channel_binding = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|cert| tls::tls_server_end_point(cert));
                        Box::new(stream)
                    }
                    Ok(Err(e)) => return Err(self.tls_error(&e)),
                    Err(_) => {
                        return Err(WsmanHttpError::Tls {
                            addr: self.config.address(),
                            failure: super::TlsFailure::Handshake,
                            reason: format!("no TLS handshake within {:?}", self.config.connect_timeout),
                        });
                    }
                }
            }
            _ => Box::new(tcp),
        };
        let (sender, connection) = http1::Builder::new()
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| self.lost(format!("HTTP/1.1 handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(conn = id, %error, "WSMan HTTP connection ended");
            }
        });
        let mut conn = Connection {
            id,
            sender,
            driver,
            security: None,
            sealed: false,
            idle_since: Instant::now(),
        };
        self.authenticate(&mut conn, channel_binding.as_deref()).await?;
        tracing::debug!(
            conn = id, url = %self.config.url(), auth = self.config.auth.scheme(), sealed = conn.sealed,
            "WSMan connection open"
        );
        Ok(conn)
    }

    async fn connect_tcp(&self) -> Result<TcpStream, WsmanHttpError> {
        let addr = self.config.address();
        let unreachable = |reason: String| WsmanHttpError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let connect = async {
            let addrs: Vec<_> = tokio::net::lookup_host((self.config.host.as_str(), self.config.port))
                .await
                .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.config.host)))?
                .collect();
            let mut last: Option<io::Error> = None;
            for socket_addr in addrs {
                match TcpStream::connect(socket_addr).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        return Ok(tcp);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(unreachable(match last {
                Some(e) => e.to_string(),
                None => format!("{} resolves to no address", self.config.host),
            }))
        };
        match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(unreachable(format!(
                "no TCP connection within {:?}",
                self.config.connect_timeout
            ))),
        }
    }

    fn tls_error(&self, error: &io::Error) -> WsmanHttpError {
        match tls::classify(error) {
            Some((failure, reason)) => WsmanHttpError::Tls {
                addr: self.config.address(),
                failure,
                reason,
            },
            None => WsmanHttpError::Tls {
                addr: self.config.address(),
                failure: super::TlsFailure::Handshake,
                reason: error.to_string(),
            },
        }
    }

    /// Authenticates a new connection: nothing to do for Basic and Certificate (their header goes
    /// with every request); the NTLM/Kerberos exchange with empty-bodied POSTs otherwise, as
    /// pypsrp does before it sends sealed messages. Over HTTPS the exchange carries the TLS channel
    /// binding.
    async fn authenticate(
        &self,
        conn: &mut Connection,
        channel_binding: Option<&[u8]>,
    ) -> Result<(), WsmanHttpError> {
        let (mut security, scheme) = match &self.config.auth {
            WsmanAuth::Basic(_) | WsmanAuth::Certificate(_) => return Ok(()),
            WsmanAuth::Ntlm(credentials) => {
                (SecurityContext::ntlm(credentials, &self.config.host)?, NEGOTIATE)
            }
            #[cfg(feature = "kerberos")]
            WsmanAuth::Negotiate { credentials, kdc } => (
                SecurityContext::negotiate(credentials, &self.config.host, false, kdc.as_deref())?,
                NEGOTIATE,
            ),
            #[cfg(feature = "kerberos")]
            WsmanAuth::Kerberos { credentials, kdc } => (
                SecurityContext::negotiate(credentials, &self.config.host, true, kdc.as_deref())?,
                NEGOTIATE,
            ),
            #[cfg(not(feature = "kerberos"))]
            WsmanAuth::Negotiate { .. } | WsmanAuth::Kerberos { .. } => {
                return Err(WsmanHttpError::InvalidConfig {
                    reason: "Negotiate and Kerberos need the `kerberos` feature".to_owned(),
                });
            }
        };
        if let Some(binding) = channel_binding {
            security.bind_channel(binding);
        }
        let step_error = |e: sspi::Error| self.auth_failed(e.to_string());
        let mut token = security.step(None).await.map_err(step_error)?;
        for _ in 0..MAX_AUTH_ROUNDS {
            let value = format!(
                "{scheme} {}",
                base64::engine::general_purpose::STANDARD.encode(&token)
            );
            let request = self
                .base_request(Bytes::new())
                .header(header::CONTENT_TYPE, SOAP_CONTENT_TYPE)
                .header(header::AUTHORIZATION, value)
                .body(Full::new(Bytes::new()))
                .map_err(|e| WsmanHttpError::protocol(format!("cannot build the request: {e}")))?;
            let raw = match conn.send(request, self).await {
                Ok(raw) => raw,
                Err(SendError::NotSent) => return Err(self.lost("closed during authentication")),
                Err(SendError::Failed(e)) => return Err(e),
            };
            let server_token = server_token(&raw.headers, scheme)?;
            match raw.status {
                StatusCode::UNAUTHORIZED => match server_token {
                    Some(server_token) if !security.is_complete() => {
                        token = security.step(Some(&server_token)).await.map_err(step_error)?;
                    }
                    _ => return Err(self.unauthorized(&raw.headers)),
                },
                status if status.is_success() => {
                    if let Some(server_token) = server_token.filter(|_| !security.is_complete()) {
                        // Kerberos mutual authentication: the AP-REP comes with the 200.
                        security.step(Some(&server_token)).await.map_err(step_error)?;
                    }
                    if !security.is_complete() {
                        return Err(
                            self.auth_failed("the server accepted an incomplete authentication exchange")
                        );
                    }
                    conn.sealed = !self.config.use_ssl;
                    conn.security = Some(security);
                    return Ok(());
                }
                status => {
                    return Err(WsmanHttpError::HttpStatus {
                        status: status.as_u16(),
                        body: raw.body,
                    });
                }
            }
        }
        Err(self.auth_failed(format!("no result after {MAX_AUTH_ROUNDS} authentication legs")))
    }
}

impl Connection {
    /// Sends one request and reads the whole response, bounded by `max_body_bytes`.
    async fn send(&mut self, request: Request<Full<Bytes>>, inner: &Inner) -> Result<Raw, SendError> {
        if self.sender.ready().await.is_err() {
            return Err(SendError::NotSent);
        }
        let response = match self.sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => {
                if e.take_message().is_some() {
                    return Err(SendError::NotSent);
                }
                let error = e.error();
                return Err(SendError::Failed(
                    if error.is_parse() || error.is_parse_status() {
                        WsmanHttpError::protocol(format!("malformed HTTP response: {error}"))
                    } else {
                        inner.lost(error.to_string())
                    },
                ));
            }
        };
        let (parts, body) = response.into_parts();
        let limit = inner.config.max_body_bytes;
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(SendError::Failed(WsmanHttpError::BodyTooLarge { limit }));
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(SendError::Failed(WsmanHttpError::BodyTooLarge { limit }));
            }
            Err(e) => {
                return Err(SendError::Failed(
                    inner.lost(format!("reading the response: {e}")),
                ));
            }
        };
        Ok(Raw {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Unseals every part of an encrypted body and checks each against its announced length.
fn unseal(security: &mut SecurityContext, body: &[u8]) -> Result<Bytes, WsmanHttpError> {
    let mut plain = Vec::with_capacity(body.len());
    for part in encryption::parse(body)? {
        let data = security
            .unwrap(part.signature, part.sealed)
            .map_err(|e| WsmanHttpError::protocol(format!("the encrypted response does not verify: {e}")))?;
        if data.len() != part.original_length {
            return Err(WsmanHttpError::protocol(format!(
                "the decrypted length {} differs from the announced {}",
                data.len(),
                part.original_length
            )));
        }
        plain.extend_from_slice(&data);
    }
    Ok(Bytes::from(plain))
}

/// The scheme names in `WWW-Authenticate` (`Negotiate`, `Basic realm="WSMAN"`, ...).
fn offered_schemes(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|challenge| challenge.split_whitespace().next())
        .filter(|scheme| !scheme.contains('='))
        .map(str::to_owned)
        .collect()
}

/// The server's token for `scheme` in `WWW-Authenticate`, if any.
fn server_token(headers: &HeaderMap, scheme: &str) -> Result<Option<Vec<u8>>, WsmanHttpError> {
    for value in headers.get_all(header::WWW_AUTHENTICATE) {
        let Ok(value) = value.to_str() else { continue };
        for challenge in value.split(',') {
            let mut words = challenge.split_whitespace();
            let (Some(name), Some(token)) = (words.next(), words.next()) else {
                continue;
            };
            let matches = name.eq_ignore_ascii_case(scheme)
                || (scheme == NEGOTIATE && name.eq_ignore_ascii_case("NTLM"));
            if matches {
                return base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .map(Some)
                    .map_err(|_| WsmanHttpError::protocol(format!("the {name} token is not base64")));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn schemes_and_tokens() {
        let h = headers(&["Negotiate", "Kerberos", "Basic realm=\"WSMAN\""]);
        assert_eq!(offered_schemes(&h), ["Negotiate", "Kerberos", "Basic"]);
        assert_eq!(server_token(&h, NEGOTIATE).unwrap(), None);
        let h = headers(&["Negotiate TlRMTVNTUAAC"]);
        assert_eq!(server_token(&h, NEGOTIATE).unwrap().unwrap(), b"NTLMSSP\0\x02");
        assert_eq!(
            server_token(&headers(&["Negotiate %%%"]), NEGOTIATE)
                .unwrap_err()
                .reason(),
            "ProtocolError"
        );
    }

    #[test]
    fn basic_over_http_is_refused_without_allowance() {
        let auth = WsmanAuth::Basic(super::super::Credentials::new("u", "p"));
        let config = WsmanConfig::new("127.0.0.1", auth);
        let e = WsmanTransport::new(config.clone()).unwrap_err();
        assert!(
            matches!(e, WsmanHttpError::UnencryptedRefused { scheme: "Basic" }),
            "{e}"
        );
        let mut allowed = config;
        allowed.allow_unencrypted = true;
        assert!(WsmanTransport::new(allowed).is_ok());
    }

    #[test]
    fn debug_of_transport_and_config_shows_no_password() {
        let auth = WsmanAuth::Ntlm(super::super::Credentials::new("DOM\\u", "pa55-w0rd-xyz"));
        let config = WsmanConfig::new("h", auth);
        assert!(!format!("{config:?}").contains("pa55"));
        let transport = WsmanTransport::new(config).unwrap();
        let debug = format!("{transport:?}");
        assert!(
            debug.contains("http://h:5985/wsman") && !debug.contains("pa55"),
            "{debug}"
        );
    }

    /// The controller spawns its sessions: the request future must be `Send` (also with the
    /// Kerberos context's KDC round trips inside).
    #[test]
    fn post_future_is_send() {
        fn is_send<T: Send>(_: &T) {}
        let auth = WsmanAuth::Ntlm(super::super::Credentials::new("u", "p"));
        let transport = WsmanTransport::new(WsmanConfig::new("h", auth)).unwrap();
        let future = transport.post(Bytes::new(), Duration::from_secs(1));
        is_send(&future);
    }

    #[cfg(not(feature = "kerberos"))]
    #[test]
    fn negotiate_without_the_feature_is_invalid_config() {
        let auth = WsmanAuth::Negotiate {
            credentials: super::super::Credentials::new("u@R", "p"),
            kdc: None,
        };
        let e = WsmanTransport::new(WsmanConfig::new("h", auth)).unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig");
    }
}
