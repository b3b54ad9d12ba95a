//! TLS for HTTPS (port 5986): rustls with the `ring` provider (what kube and russh already use), the
//! CA from PEM bytes or the system roots, a client certificate for Certificate authentication, and
//! New-PSSessionOption's skip options.

use std::{fmt, io, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use super::{TlsFailure, WsmanHttpError};

/// How the server's certificate is checked, as New-PSSessionOption does it.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM bytes with one or more CA certificates (a CA Secret's `ca.crt`). `None`: the system's
    /// roots (rustls-native-certs).
    pub ca_pem: Option<Vec<u8>>,
    /// SkipCACheck: do not check that the chain leads to a trusted CA. The name is still checked
    /// unless `skip_cn_check` is also set. Logged as a warning.
    pub skip_ca_check: bool,
    /// SkipCNCheck: do not check that the certificate is valid for the host name. Logged as a
    /// warning.
    pub skip_cn_check: bool,
    /// SkipRevocationCheck: accepted for parity with New-PSSessionOption and a no-op, because no
    /// revocation is checked in the first place (rustls fetches neither CRLs nor OCSP; a CRL could
    /// be configured through `WebPkiServerVerifier` if ever needed).
    pub skip_revocation_check: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("<{} bytes>", p.len())),
            )
            .field("skip_ca_check", &self.skip_ca_check)
            .field("skip_cn_check", &self.skip_cn_check)
            .field("skip_revocation_check", &self.skip_revocation_check)
            .finish()
    }
}

/// A client certificate and its key (a `kubernetes.io/tls` Secret). `Debug` shows no key material.
pub struct ClientCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientCertificate {
    /// Reads `tls.crt` (the certificate, possibly followed by intermediates) and `tls.key` (PKCS#8,
    /// PKCS#1 or SEC1 PEM).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, WsmanHttpError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("the client certificate PEM does not parse: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("the client certificate PEM holds no certificate"));
        }
        // The error text of a key that does not parse names the PEM section, never key bytes.
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(format!("the client key PEM does not parse: {e}")))?;
        Ok(Self { chain, key })
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientCertificate({} certificate(s), key <redacted>)",
            self.chain.len()
        )
    }
}

fn invalid(reason: impl Into<String>) -> WsmanHttpError {
    WsmanHttpError::InvalidConfig {
        reason: reason.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration once per transport; `host` is only for the warnings' fields.
pub(super) fn client_config(
    options: &TlsOptions,
    client_cert: Option<&ClientCertificate>,
    host: &str,
) -> Result<Arc<ClientConfig>, WsmanHttpError> {
    let provider = provider();
    let roots = if options.skip_ca_check {
        None
    } else {
        Some(Arc::new(root_store(options.ca_pem.as_deref())?))
    };
    if options.skip_ca_check {
        tracing::warn!(
            host,
            skip_ca_check = true,
            "TLS: the server's certificate chain is not checked against a trusted CA (SkipCACheck)"
        );
    }
    if options.skip_cn_check {
        tracing::warn!(
            host,
            skip_cn_check = true,
            "TLS: the server's certificate is not checked against the host name (SkipCNCheck)"
        );
    }
    if options.skip_revocation_check {
        tracing::debug!(host, "SkipRevocationCheck is a no-op: revocation is not checked");
    }
    let verifier = Arc::new(Verifier::new(roots, options, Arc::clone(&provider))?);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
            .map_err(|e| invalid(format!("the client certificate or key is not usable: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn root_store(ca_pem: Option<&[u8]>) -> Result<RootCertStore, WsmanHttpError> {
    let mut store = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("the CA PEM does not parse: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("the CA PEM holds no certificate"));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| invalid(format!("a CA certificate is not usable: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system CA certificate could not be loaded");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates");
        }
    }
    Ok(store)
}

/// The server certificate check: webpki with the configured roots, relaxed as the skip options
/// say. Handshake signatures are always verified, so the peer still proves it holds the key of the
/// certificate it sent.
#[derive(Debug)]
struct Verifier {
    /// `None` with SkipCACheck.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    skip_cn_check: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn new(
        roots: Option<Arc<RootCertStore>>,
        options: &TlsOptions,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, WsmanHttpError> {
        let algorithms = provider.signature_verification_algorithms;
        let webpki = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| invalid(format!("no usable CA: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            webpki,
            skip_cn_check: options.skip_cn_check,
            algorithms,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.webpki {
            Some(webpki) => {
                match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                    )) if self.skip_cn_check => Ok(ServerCertVerified::assertion()),
                    other => other,
                }
            }
            None if self.skip_cn_check => Ok(ServerCertVerified::assertion()),
            None => {
                // SkipCACheck alone: the name must still match.
                let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
                    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                        e,
                    ))))
                })?;
                cert.verify_is_valid_for_subject_name(server_name)
                    .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Classifies a failed handshake (or a first read that carried the server's alert).
pub(super) fn classify(error: &io::Error) -> Option<(TlsFailure, String)> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some((classify_rustls(tls), tls.to_string()))
}

fn classify_rustls(error: &rustls::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsFailure::UntrustedCa,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            _ => TlsFailure::Handshake,
        },
        rustls::Error::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        ) => TlsFailure::ClientCertRejected,
        _ => TlsFailure::Handshake,
    }
}

/// The `tls-server-end-point` channel binding (RFC 5929 4.1) of the server's certificate: its hash
/// with the certificate's signature hash, SHA-256 when that is MD5, SHA-1 or unknown (as pypsrp and
/// Windows compute it). NTLM and Kerberos over HTTPS carry it, so that a server with Extended
/// Protection (WinRM's `CbtHardeningLevel=Strict`) accepts the authentication.
pub(super) fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    let algorithm = match signature_hash(cert_der) {
        Some(SignatureHash::Sha384) => &ring::digest::SHA384,
        Some(SignatureHash::Sha512) => &ring::digest::SHA512,
        _ => &ring::digest::SHA256,
    };
    let mut data = b"tls-server-end-point:".to_vec();
    data.extend_from_slice(ring::digest::digest(algorithm, cert_der).as_ref());
    data
}

#[derive(Debug, PartialEq, Eq)]
enum SignatureHash {
    Sha256OrWeaker,
    Sha384,
    Sha512,
}

const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// The hash of the certificate's `signatureAlgorithm`, from a short DER walk (a certificate that
/// does not parse gets SHA-256, and the server then judges the binding).
fn signature_hash(cert_der: &[u8]) -> Option<SignatureHash> {
    let (0x30, cert, _) = der(cert_der)? else {
        return None;
    };
    let (0x30, _tbs, rest) = der(cert)? else {
        return None;
    };
    let (0x30, algorithm, _) = der(rest)? else {
        return None;
    };
    let (0x06, oid, params) = der(algorithm)? else {
        return None;
    };
    let hash_oid = |oid: &[u8]| match oid {
        OID_SHA384 => SignatureHash::Sha384,
        OID_SHA512 => SignatureHash::Sha512,
        _ => SignatureHash::Sha256OrWeaker,
    };
    Some(match oid {
        OID_SHA384_RSA | OID_ECDSA_SHA384 => SignatureHash::Sha384,
        OID_SHA512_RSA | OID_ECDSA_SHA512 => SignatureHash::Sha512,
        // RSASSA-PSS-params: SEQUENCE { [0] EXPLICIT hashAlgorithm AlgorithmIdentifier, ... }
        OID_RSA_PSS => match der(params) {
            Some((0x30, pss, _)) => match der(pss) {
                Some((0xa0, explicit, _)) => match der(explicit) {
                    Some((0x30, hash_algorithm, _)) => match der(hash_algorithm) {
                        Some((0x06, oid, _)) => hash_oid(oid),
                        _ => SignatureHash::Sha256OrWeaker,
                    },
                    _ => SignatureHash::Sha256OrWeaker,
                },
                _ => SignatureHash::Sha256OrWeaker,
            },
            _ => SignatureHash::Sha256OrWeaker,
        },
        _ => SignatureHash::Sha256OrWeaker,
    })
}

/// One DER element: `(tag, content, rest)`.
fn der(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_invalid_config_without_key_bytes() {
        let e = root_store(Some(b"not a pem")).unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig");
        let key = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let e = ClientCertificate::from_pem(b"", key).unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn classification() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UntrustedCa,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::Expired,
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                TlsFailure::ClientCertRejected,
            ),
            (rustls::Error::HandshakeNotComplete, TlsFailure::Handshake),
        ];
        for (error, expected) in cases {
            let io = io::Error::new(io::ErrorKind::InvalidData, error);
            assert_eq!(classify(&io).unwrap().0, expected);
        }
        assert!(classify(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn channel_binding_hash_follows_the_signature_algorithm() {
        for (algorithm, expected, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, SignatureHash::Sha256OrWeaker, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, SignatureHash::Sha384, 48),
        ] {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let params = rcgen::CertificateParams::new(vec!["h".to_owned()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(signature_hash(cert.der()), Some(expected));
            let binding = tls_server_end_point(cert.der());
            assert_eq!(binding.len(), "tls-server-end-point:".len() + len);
        }
        // Garbage never panics and falls back to SHA-256.
        assert_eq!(signature_hash(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(
            tls_server_end_point(b"").len(),
            "tls-server-end-point:".len() + 32
        );
    }

    /// Each skip option is a warning with the host and the flag as fields; none without them.
    #[test]
    fn skips_are_logged_as_structured_warnings() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let logged = |options: TlsOptions| {
            let capture = Capture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                client_config(&options, None, "web01.example.com").unwrap();
            });
            String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
        };
        let text = logged(TlsOptions {
            skip_ca_check: true,
            skip_cn_check: true,
            skip_revocation_check: true,
            ..TlsOptions::default()
        });
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("host=\"web01.example.com\"")
                && lines[0].contains("skip_ca_check=true"),
            "{text}"
        );
        assert!(
            lines[1].contains("WARN") && lines[1].contains("skip_cn_check=true"),
            "{text}"
        );
        assert_eq!(logged(TlsOptions::default()), "");
    }

    #[test]
    fn debug_shows_no_key() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key_pem = cert.signing_key.serialize_pem();
        let client = ClientCertificate::from_pem(cert.cert.pem().as_bytes(), key_pem.as_bytes()).unwrap();
        let debug = format!("{client:?}");
        assert_eq!(debug, "ClientCertificate(1 certificate(s), key <redacted>)");
        assert!(client_config(&TlsOptions::default(), Some(&client), "h").is_ok());
    }
}
