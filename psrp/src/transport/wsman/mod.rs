//! The WS-Management HTTP transport: it moves SOAP envelopes, `POST /wsman` with
//! `Content-Type: application/soap+xml;charset=UTF-8`, bytes in, status and bytes out. It knows
//! nothing of SOAP (that is `crate::wsman`'s) and nothing of PSRP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), psrp::transport::wsman::WsmanHttpError> {
//! use std::time::Duration;
//! use psrp::transport::wsman::{Credentials, WsmanAuth, WsmanConfig, WsmanTransport};
//!
//! let config = WsmanConfig::new("web01.example.com", WsmanAuth::Ntlm(Credentials::new("EXAMPLE\\ops", "...")));
//! let transport = WsmanTransport::new(config)?;
//! let envelope = bytes::Bytes::from_static(b"<s:Envelope>...</s:Envelope>");
//! // The bound is larger than the envelope's OperationTimeout, so a Receive long-poll ends first.
//! let response = transport.post(envelope, Duration::from_secs(200)).await?;
//! println!("{} {} bytes", response.status, response.body.len());
//! # Ok(()) }
//! ```
//!
//! # Authentication
//!
//! | [`WsmanAuth`] | needs | on the wire |
//! |---|---|---|
//! | `Basic` | user, password; HTTPS, or `allow_unencrypted` (WinRM's `AllowUnencrypted=true`, which Windows refuses by default) | `Authorization: Basic` on every request; over HTTP without the allowance nothing is sent: [`WsmanHttpError::UnencryptedRefused`] |
//! | `Ntlm` | user (`user`, `DOMAIN\user`, `user@domain`), password; a local or domain account | an NTLM exchange per connection under the `Negotiate` scheme; over HTTP every message is then sealed (`multipart/encrypted`, `application/HTTP-SPNEGO-session-encrypted`), since Windows refuses unencrypted traffic by default; over HTTPS TLS protects it |
//! | `Negotiate`, `Kerberos` | the `kerberos` cargo feature; a domain account as `user@REALM` (sent as an enterprise name, as Windows does: Active Directory resolves it) or `REALM\user` (a plain principal name: what an MIT KDC needs); a KDC that requires pre-authentication (AD always does); a KDC reachable on TCP (or UDP) port 88, named by the `kdc` field (`tcp://dc1.example.com:88`), else by the env `SSPI_KDC_URL_<REALM>` / `SSPI_KDC_URL`, else by the realm's `kdc` in `/etc/krb5.conf` (`KRB5_CONFIG`); no DNS SRV discovery (that needs sspi's `dns_resolver` feature, left off); clocks within 5 minutes of the KDC's; the host by the name its SPN `HTTP/<host>` has (not an IP address) | `Negotiate`: SPNEGO, Kerberos preferred, NTLM as fallback; `Kerberos`: a bare Kerberos token (as pypsrp sends it under the `Negotiate` scheme Windows offers); sealed as above over HTTP. Pure Rust (sspi), the KDC traffic on tokio: no libkrb5, no keytab, no system packages |
//! | `Certificate` | HTTPS; a client certificate and key (`kubernetes.io/tls`) mapped to a local user on the host (`New-Item WSMan:\localhost\ClientCertificate`) | TLS client authentication, plus the header `Authorization: http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual` |
//!
//! Over HTTPS, NTLM and Kerberos carry the TLS channel binding (`tls-server-end-point`, RFC 5929),
//! so WinRM's Extended Protection (`CbtHardeningLevel=Strict`) accepts them; message encryption
//! is then TLS's.
//!
//! Credentials never reach logs or `Debug` output ([`Password`] is redacted and wiped on drop;
//! the copies inside HTTP header values and sspi are not wiped by us). sspi logs message buffers
//! (envelopes before sealing, in hex) at `debug`: keep its target at `info` in production filters.
//!
//! # TLS
//!
//! [`TlsOptions`]: the CA as PEM bytes (or the system roots), and New-PSSessionOption's
//! `SkipCACheck` and `SkipCNCheck`, each logged with `tracing::warn!` when a transport is built.
//! `SkipRevocationCheck` is accepted and does nothing: no revocation is checked.
//!
//! # Connections
//!
//! A small pool of keep-alive HTTP/1.1 connections, at most [`WsmanConfig::max_connections`], each
//! authenticated on its own (NTLM and Kerberos authenticate a connection, and its sealing state
//! belongs to it). A request takes an idle connection or opens one, so a Receive long-poll can be
//! outstanding while a Send or Signal goes out on another connection, as Windows allows. A
//! connection that failed, timed out or sat idle longer than [`WsmanConfig::idle_timeout`] is
//! dropped, never reused: a response that did not arrive may still be on its way. A request is
//! sent again, once, on a new connection only when it provably was not processed: the kept-alive
//! connection was closed before it went out, or the server answered 401 to a connection it had
//! authenticated (its context expired).
//!
//! # The HTTP stack
//!
//! hyper 1 (its low-level `client::conn::http1`) over tokio, with rustls (`ring`) through
//! tokio-rustls: all already in the workspace's tree through kube, maintained, and the low-level
//! connection API is what per-connection authentication needs: a pooled client (reqwest,
//! hyper-util's legacy client) hides which connection a request goes out on, and NTLM's sealing
//! state lives on exactly one. NTLM and Kerberos are sspi (Devolutions, pure Rust, maintained; it
//! implements `EncryptMessage`/`DecryptMessage` as Windows does).

mod auth;
mod client;
pub mod encryption;
mod error;
#[cfg(feature = "kerberos")]
mod kerberos;
mod tls;

use std::time::Duration;

pub use auth::{Credentials, Password};
pub use client::{WsmanResponse, WsmanTransport};
pub use error::{TlsFailure, WsmanHttpError};
pub use tls::{ClientCertificate, TlsOptions};

/// The `Authorization` value of WS-Management certificate authentication (DSP0226, secprofile
/// https/mutual).
pub const CERTIFICATE_AUTH_HEADER: &str =
    "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";

/// How to authenticate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WsmanAuth {
    Basic(Credentials),
    Ntlm(Credentials),
    /// SPNEGO: Kerberos, falling back to NTLM. Needs the `kerberos` feature; without it
    /// [`WsmanTransport::new`] refuses it with [`WsmanHttpError::InvalidConfig`].
    Negotiate {
        credentials: Credentials,
        /// The KDC as `tcp://host:88`; `None`: found through DNS SRV records of the realm.
        kdc: Option<String>,
    },
    /// Kerberos only. Needs the `kerberos` feature, as `Negotiate`.
    Kerberos {
        credentials: Credentials,
        kdc: Option<String>,
    },
    Certificate(ClientCertificate),
}

impl WsmanAuth {
    /// The scheme's name, for messages and errors.
    pub fn scheme(&self) -> &'static str {
        match self {
            WsmanAuth::Basic(_) => "Basic",
            WsmanAuth::Ntlm(_) => "NTLM",
            WsmanAuth::Negotiate { .. } => "Negotiate",
            WsmanAuth::Kerberos { .. } => "Kerberos",
            WsmanAuth::Certificate(_) => "Certificate",
        }
    }

    /// The user name, or `certificate` for certificate authentication.
    pub fn user(&self) -> &str {
        match self {
            WsmanAuth::Basic(c) | WsmanAuth::Ntlm(c) => &c.username,
            WsmanAuth::Negotiate { credentials, .. } | WsmanAuth::Kerberos { credentials, .. } => {
                &credentials.username
            }
            WsmanAuth::Certificate(_) => "certificate",
        }
    }
}

/// Where and how to POST envelopes.
#[derive(Clone, Debug)]
pub struct WsmanConfig {
    /// DNS name or IP address; also the TLS server name and the SPN's host part.
    pub host: String,
    pub port: u16,
    /// HTTPS.
    pub use_ssl: bool,
    /// The URL path, `/wsman`.
    pub path: String,
    pub auth: WsmanAuth,
    pub tls: TlsOptions,
    /// Lets Basic authentication go over plain HTTP (the password then crosses the network in
    /// clear text). Off by default.
    pub allow_unencrypted: bool,
    /// Bound over DNS and TCP connect, and separately over the TLS handshake.
    pub connect_timeout: Duration,
    /// Connections open at once (and so requests in flight at once).
    pub max_connections: usize,
    /// An idle connection older than this is closed instead of reused (below http.sys's 120 s idle
    /// timeout, so a reused connection is not one the server is closing).
    pub idle_timeout: Duration,
    /// The largest response body accepted (compressed or not, encrypted or not).
    pub max_body_bytes: usize,
}

impl WsmanConfig {
    /// HTTP on port 5985, `/wsman`, a 30 s connect timeout, 4 connections, 60 s idle timeout, and
    /// 16 MiB response bodies (WinRM's MaxEnvelopeSizekb is 500 KiB by default; a client asking for
    /// more still stays far below).
    pub fn new(host: impl Into<String>, auth: WsmanAuth) -> Self {
        Self {
            host: host.into(),
            port: 5985,
            use_ssl: false,
            path: "/wsman".to_owned(),
            auth,
            tls: TlsOptions::default(),
            allow_unencrypted: false,
            connect_timeout: Duration::from_secs(30),
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 16 << 20,
        }
    }

    /// HTTPS on port 5986.
    pub fn https(mut self) -> Self {
        self.use_ssl = true;
        self.port = 5986;
        self
    }

    /// `host:port` (IPv6 addresses bracketed).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http[s]://host:port/wsman`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.use_ssl { "https" } else { "http" };
        format!("{scheme}://{}{}", self.address(), self.path)
    }
}
