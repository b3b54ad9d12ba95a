//! The `multipart/encrypted` framing of WS-Management message encryption (MS-WSMV 2.2.9.1), the way
//! Windows and pypsrp/pywinrm write it:
//!
//! ```text
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
//! \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>\r\n
//! --Encrypted Boundary\r\n
//! \tContent-Type: application/octet-stream\r\n
//! <u32 LE signature length><signature><sealed payload>--Encrypted Boundary--\r\n
//! ```
//!
//! Sans-IO: bytes in, parts out. The sealing itself (NTLM/Kerberos `EncryptMessage`) is the security
//! context's; this module only frames and unframes, and never panics on what a server sends.

use super::WsmanHttpError;

/// The session-encryption protocol for NTLM and Negotiate (SPNEGO).
pub const PROTOCOL_SPNEGO: &str = "application/HTTP-SPNEGO-session-encrypted";
/// The session-encryption protocol for Kerberos used directly.
pub const PROTOCOL_KERBEROS: &str = "application/HTTP-Kerberos-session-encrypted";

const BOUNDARY: &str = "Encrypted Boundary";
const MARKER: &[u8] = b"--Encrypted Boundary";
const OCTET_STREAM: &[u8] = b"Content-Type: application/octet-stream\r\n";
/// No signature or GSS wrap header of a mechanism we speak is anywhere near this.
const MAX_SIGNATURE: usize = 4096;

/// The `Content-Type` header of an encrypted request.
pub fn content_type(protocol: &str) -> String {
    format!("multipart/encrypted;protocol=\"{protocol}\";boundary=\"{BOUNDARY}\"")
}

/// Frames one sealed message. `original_length` is the plaintext length (plus any padding the
/// mechanism reports, as pypsrp adds it).
pub fn frame(protocol: &str, original_length: usize, signature: &[u8], sealed: &[u8]) -> Vec<u8> {
    let head = format!(
        "--{BOUNDARY}\r\n\tContent-Type: {protocol}\r\n\
         \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={original_length}\r\n\
         --{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
    );
    let tail = format!("--{BOUNDARY}--\r\n");
    let mut out = Vec::with_capacity(head.len() + 4 + signature.len() + sealed.len() + tail.len());
    out.extend_from_slice(head.as_bytes());
    // The signature length always fits: signatures are tens of bytes.
    out.extend_from_slice(&(signature.len() as u32).to_le_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(sealed);
    out.extend_from_slice(tail.as_bytes());
    out
}

/// One encrypted part of a response.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The protocol named in the part's header (`application/HTTP-SPNEGO-session-encrypted`).
    pub protocol: &'a str,
    /// The plaintext length the server announced.
    pub original_length: usize,
    pub signature: &'a [u8],
    pub sealed: &'a [u8],
}

/// True when a response's `Content-Type` announces an encrypted body.
pub fn is_encrypted(content_type: &str) -> bool {
    let lower = content_type.trim_start().to_ascii_lowercase();
    lower.starts_with("multipart/encrypted") || lower.starts_with("multipart/x-multi-encrypted")
}

/// Splits an encrypted body into its parts. Windows sends one part for NTLM and Kerberos; several
/// only for CredSSP (`multipart/x-multi-encrypted`), which is parsed the same way.
pub fn parse(body: &[u8]) -> Result<Vec<Part<'_>>, WsmanHttpError> {
    let mut parts = Vec::new();
    let mut rest = body;
    loop {
        rest = skip_marker(rest)?;
        if rest.starts_with(b"--") {
            // The closing `--Encrypted Boundary--`.
            break;
        }
        let (header, after) = split_at_marker(rest)
            .ok_or_else(|| WsmanHttpError::protocol("encrypted body: no boundary after a part header"))?;
        let header = std::str::from_utf8(header)
            .map_err(|_| WsmanHttpError::protocol("encrypted body: a part header is not UTF-8"))?;
        let protocol = header_value(header, "Content-Type")
            .ok_or_else(|| WsmanHttpError::protocol("encrypted body: a part header has no Content-Type"))?;
        let original = header_value(header, "OriginalContent").ok_or_else(|| {
            WsmanHttpError::protocol("encrypted body: a part header has no OriginalContent")
        })?;
        let original_length = original
            .split(';')
            .find_map(|p| p.trim().strip_prefix("Length="))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or_else(|| WsmanHttpError::protocol("encrypted body: OriginalContent has no valid Length"))?;

        // The payload part: a header line, then the binary payload up to the next marker.
        let payload = skip_marker(after)?;
        let payload = trim_leading_whitespace(payload);
        let payload = payload.strip_prefix(OCTET_STREAM).ok_or_else(|| {
            WsmanHttpError::protocol("encrypted body: the payload part is not application/octet-stream")
        })?;
        let Some(len_bytes) = payload.first_chunk::<4>() else {
            return Err(WsmanHttpError::protocol(
                "encrypted body: truncated signature length",
            ));
        };
        let signature_length = u32::from_le_bytes(*len_bytes) as usize;
        if signature_length > MAX_SIGNATURE || 4 + signature_length > payload.len() {
            return Err(WsmanHttpError::protocol(format!(
                "encrypted body: signature length {signature_length} does not fit the payload"
            )));
        }
        let signature = &payload[4..4 + signature_length];
        let data = &payload[4 + signature_length..];
        // The sealed bytes are binary: look for the next marker only past the announced length, so
        // that bytes inside them can never end the part early.
        let from = original_length.min(data.len());
        let end = find(&data[from..], MARKER)
            .map(|at| from + at)
            .ok_or_else(|| WsmanHttpError::protocol("encrypted body: no closing boundary"))?;
        // Tolerate a CRLF between the payload and the next boundary (MIME writers add one;
        // Windows does not): only when it is exactly what follows the announced length.
        let sealed_end = if end == original_length + 2 && data[original_length..end] == *b"\r\n" {
            original_length
        } else {
            end
        };
        parts.push(Part {
            protocol,
            original_length,
            signature,
            sealed: &data[..sealed_end],
        });
        rest = &data[end..];
    }
    if parts.is_empty() {
        return Err(WsmanHttpError::protocol("encrypted body: no encrypted part"));
    }
    Ok(parts)
}

/// Skips `--`, optional whitespace (Exchange writes `-- Encrypted Boundary`), the boundary and a CRLF
/// unless the closing `--` follows.
fn skip_marker(data: &[u8]) -> Result<&[u8], WsmanHttpError> {
    let missing = || WsmanHttpError::protocol("encrypted body: expected --Encrypted Boundary");
    let data = trim_leading_whitespace(data);
    let data = data.strip_prefix(b"--").ok_or_else(missing)?;
    let data = trim_leading_whitespace(data);
    let data = data.strip_prefix(BOUNDARY.as_bytes()).ok_or_else(missing)?;
    if data.starts_with(b"--") {
        return Ok(data);
    }
    data.strip_prefix(b"\r\n").ok_or_else(missing)
}

fn split_at_marker(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = find(data, b"--")?;
    Some((&data[..at], &data[at..]))
}

fn trim_leading_whitespace(mut data: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = data {
        data = rest;
    }
    data
}

fn header_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_is_what_pypsrp_writes() {
        let body = frame(PROTOCOL_SPNEGO, 5, b"SIGNATURE-16-BYT", b"abcde");
        let expected = b"--Encrypted Boundary\r\n\
            \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\
            \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=5\r\n\
            --Encrypted Boundary\r\n\
            \tContent-Type: application/octet-stream\r\n\
            \x10\x00\x00\x00SIGNATURE-16-BYTabcde--Encrypted Boundary--\r\n";
        assert_eq!(body, expected.to_vec());
        assert_eq!(
            content_type(PROTOCOL_SPNEGO),
            "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\""
        );
    }

    #[test]
    fn parse_round_trip_with_marker_bytes_inside_the_payload() {
        // Sealed bytes that happen to contain the marker must not end the part.
        let sealed = b"xx--Encrypted Boundary--\r\nyy";
        let body = frame(PROTOCOL_KERBEROS, sealed.len(), b"sig", sealed);
        let parts = parse(&body).unwrap();
        assert_eq!(
            parts,
            vec![Part {
                protocol: PROTOCOL_KERBEROS,
                original_length: sealed.len(),
                signature: b"sig",
                sealed,
            }]
        );
    }

    #[test]
    fn parse_accepts_exchange_spacing_and_two_parts() {
        let mut body = frame(PROTOCOL_SPNEGO, 3, b"s1", b"abc");
        // Drop the closing marker of the first and append a second part.
        body.truncate(body.len() - b"--Encrypted Boundary--\r\n".len());
        body.extend_from_slice(&frame(PROTOCOL_SPNEGO, 2, b"s2", b"de"));
        let text = String::from_utf8(body)
            .unwrap()
            .replacen("--Encrypted", "-- Encrypted", 1);
        let parts = parse(text.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].signature, parts[0].sealed), (&b"s1"[..], &b"abc"[..]));
        assert_eq!((parts[1].signature, parts[1].sealed), (&b"s2"[..], &b"de"[..]));
    }

    #[test]
    fn a_crlf_before_the_closing_boundary_is_not_payload() {
        let body = frame(PROTOCOL_SPNEGO, 3, b"sig", b"abc");
        let text = String::from_utf8(body)
            .unwrap()
            .replace("abc--Encrypted", "abc\r\n--Encrypted");
        let parts = parse(text.as_bytes()).unwrap();
        assert_eq!(parts[0].sealed, b"abc");
    }

    #[test]
    fn malformed_bodies_are_protocol_errors() {
        let good = frame(PROTOCOL_SPNEGO, 3, b"sig", b"abc");
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"<s:Envelope/>".to_vec(),
            b"--Encrypted Boundary--\r\n".to_vec(),
            good[..good.len() - 10].to_vec(),
            String::from_utf8_lossy(&good)
                .replace("Length=3", "Length=x")
                .into_bytes(),
            String::from_utf8_lossy(&good)
                .replace("octet-stream", "text/plain")
                .into_bytes(),
            {
                let mut b = good.clone();
                let at = find(&b, b"\x03\x00\x00\x00").unwrap();
                b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                b
            },
        ];
        for case in cases {
            let e = parse(&case).unwrap_err();
            assert_eq!(e.reason(), "ProtocolError", "{e}");
        }
    }

    #[test]
    fn encrypted_content_types() {
        assert!(is_encrypted(&content_type(PROTOCOL_SPNEGO)));
        assert!(is_encrypted("Multipart/Encrypted;boundary=x"));
        assert!(!is_encrypted("application/soap+xml;charset=UTF-8"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&data);
        }

        #[test]
        fn parse_never_panics_on_mangled_frames(
            sig in proptest::collection::vec(any::<u8>(), 0..40),
            sealed in proptest::collection::vec(any::<u8>(), 0..80),
            cut in 0usize..400,
            flip in 0usize..400,
        ) {
            let mut body = frame(PROTOCOL_SPNEGO, sealed.len(), &sig, &sealed);
            let parsed = parse(&body).unwrap();
            prop_assert_eq!(parsed[0].sealed, &sealed[..]);
            prop_assert_eq!(parsed[0].signature, &sig[..]);
            if flip < body.len() {
                body[flip] ^= 0x55;
            }
            body.truncate(cut.min(body.len()));
            let _ = parse(&body);
        }
    }
}
