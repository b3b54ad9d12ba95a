//! The out-of-process framing `pwsh -s`/`-sshs` speaks: one XML packet per line.
//!
//! Not part of MS-PSRP (which specifies WS-Management); PowerShell defines it in
//! `OutOfProcTransportManager.cs` (`OutOfProcessUtils`). Each packet is one element on one line:
//!
//! ```text
//! <Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>base64 fragments</Data>
//! <DataAck PSGuid='...' />   <Command PSGuid='...' />   <CommandAck PSGuid='...' />
//! <Signal PSGuid='...' />    <SignalAck PSGuid='...' /> <Close PSGuid='...' />   <CloseAck PSGuid='...' />
//! ```
//!
//! `PSGuid` is the pipeline id, or the empty GUID for the runspace pool; `Stream` is `Default` or
//! `PromptResponse` (host call answers). The client sends Data, Command, Signal and Close; the server
//! answers each with its Ack and sends Data. This module is pure: [`Packet::encode_into`] writes a line,
//! [`PacketReader`] turns bytes into packets. The parser is as strict as PowerShell's (one element, the
//! attributes it expects and no others, base64 text only in Data); it also takes `"` quotes, and a
//! `\r\n` line end, and skips empty lines as PowerShell does.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};
use uuid::Uuid;

/// Default bound on one line: a 32 KiB fragment is 43,692 bytes of base64; leave room for larger ones.
pub const DEFAULT_MAX_LINE_LEN: usize = 1 << 20;

/// The `Stream` of a Data packet (PowerShell's `DataPriorityType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stream {
    #[default]
    Default,
    /// Answers to host calls travel here so that they overtake queued data.
    PromptResponse,
}

impl Stream {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stream::Default => "Default",
            Stream::PromptResponse => "PromptResponse",
        }
    }

    fn parse(value: &[u8]) -> Option<Stream> {
        // PowerShell parses the name ignoring case.
        if value.eq_ignore_ascii_case(b"Default") {
            Some(Stream::Default)
        } else if value.eq_ignore_ascii_case(b"PromptResponse") {
            Some(Stream::PromptResponse)
        } else {
            None
        }
    }
}

/// The eight packet kinds, named by their element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    Data,
    DataAck,
    Command,
    CommandAck,
    Signal,
    SignalAck,
    Close,
    CloseAck,
}

impl PacketKind {
    pub const ALL: [PacketKind; 8] = [
        PacketKind::Data,
        PacketKind::DataAck,
        PacketKind::Command,
        PacketKind::CommandAck,
        PacketKind::Signal,
        PacketKind::SignalAck,
        PacketKind::Close,
        PacketKind::CloseAck,
    ];

    /// The element name.
    pub const fn tag(self) -> &'static str {
        match self {
            PacketKind::Data => "Data",
            PacketKind::DataAck => "DataAck",
            PacketKind::Command => "Command",
            PacketKind::CommandAck => "CommandAck",
            PacketKind::Signal => "Signal",
            PacketKind::SignalAck => "SignalAck",
            PacketKind::Close => "Close",
            PacketKind::CloseAck => "CloseAck",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<PacketKind> {
        PacketKind::ALL
            .into_iter()
            .find(|kind| kind.tag().as_bytes() == tag)
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// One out-of-process packet. `pipeline_id` is the `PSGuid`: `None` (the empty GUID) for the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// PSRP fragments (any whole or partial fragments; the framing does not look inside).
    Data {
        stream: Stream,
        pipeline_id: Option<Uuid>,
        data: Bytes,
    },
    DataAck {
        pipeline_id: Option<Uuid>,
    },
    /// Creates the pipeline `pipeline_id`; its CREATE_PIPELINE follows in Data.
    Command {
        pipeline_id: Option<Uuid>,
    },
    CommandAck {
        pipeline_id: Option<Uuid>,
    },
    /// Stops the pipeline.
    Signal {
        pipeline_id: Option<Uuid>,
    },
    SignalAck {
        pipeline_id: Option<Uuid>,
    },
    /// Closes the pipeline, or with no pipeline the runspace pool (and the server process).
    Close {
        pipeline_id: Option<Uuid>,
    },
    CloseAck {
        pipeline_id: Option<Uuid>,
    },
}

impl Packet {
    /// A Data packet.
    pub fn data(stream: Stream, pipeline_id: Option<Uuid>, data: impl Into<Bytes>) -> Packet {
        Packet::Data {
            stream,
            pipeline_id: pipeline_id.filter(|id| !id.is_nil()),
            data: data.into(),
        }
    }

    /// A packet that carries only a PSGuid: every kind but Data (for which this is `None`).
    pub fn control(kind: PacketKind, pipeline_id: Option<Uuid>) -> Option<Packet> {
        let pipeline_id = pipeline_id.filter(|id| !id.is_nil());
        Some(match kind {
            PacketKind::Data => return None,
            PacketKind::DataAck => Packet::DataAck { pipeline_id },
            PacketKind::Command => Packet::Command { pipeline_id },
            PacketKind::CommandAck => Packet::CommandAck { pipeline_id },
            PacketKind::Signal => Packet::Signal { pipeline_id },
            PacketKind::SignalAck => Packet::SignalAck { pipeline_id },
            PacketKind::Close => Packet::Close { pipeline_id },
            PacketKind::CloseAck => Packet::CloseAck { pipeline_id },
        })
    }

    pub fn kind(&self) -> PacketKind {
        match self {
            Packet::Data { .. } => PacketKind::Data,
            Packet::DataAck { .. } => PacketKind::DataAck,
            Packet::Command { .. } => PacketKind::Command,
            Packet::CommandAck { .. } => PacketKind::CommandAck,
            Packet::Signal { .. } => PacketKind::Signal,
            Packet::SignalAck { .. } => PacketKind::SignalAck,
            Packet::Close { .. } => PacketKind::Close,
            Packet::CloseAck { .. } => PacketKind::CloseAck,
        }
    }

    /// The PSGuid: the pipeline, or `None` for the runspace pool.
    pub fn pipeline_id(&self) -> Option<Uuid> {
        match *self {
            Packet::Data { pipeline_id, .. }
            | Packet::DataAck { pipeline_id }
            | Packet::Command { pipeline_id }
            | Packet::CommandAck { pipeline_id }
            | Packet::Signal { pipeline_id }
            | Packet::SignalAck { pipeline_id }
            | Packet::Close { pipeline_id }
            | Packet::CloseAck { pipeline_id } => pipeline_id,
        }
    }

    /// Appends the packet's line, `\n` included, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut guid = Uuid::encode_buffer();
        // .NET's Guid.ToString(): lower case, hyphenated.
        let guid = self
            .pipeline_id()
            .unwrap_or(Uuid::nil())
            .hyphenated()
            .encode_lower(&mut guid);
        match self {
            Packet::Data { stream, data, .. } => {
                let b64_len = base64::encoded_len(data.len(), true).unwrap_or(0);
                out.reserve(64 + b64_len);
                out.extend_from_slice(b"<Data Stream='");
                out.extend_from_slice(stream.as_str().as_bytes());
                out.extend_from_slice(b"' PSGuid='");
                out.extend_from_slice(guid.as_bytes());
                out.extend_from_slice(b"'>");
                let start = out.len();
                out.resize(start + b64_len, 0);
                let written = BASE64.encode_slice(data, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
                out.extend_from_slice(b"</Data>\n");
            }
            _ => {
                out.push(b'<');
                out.extend_from_slice(self.kind().tag().as_bytes());
                out.extend_from_slice(b" PSGuid='");
                out.extend_from_slice(guid.as_bytes());
                out.extend_from_slice(b"' />\n");
            }
        }
    }

    /// The packet's line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Parses one line (without its `\n`; a trailing `\r` is allowed).
    pub fn parse_line(line: &[u8]) -> Result<Packet, PacketError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Parser { line, pos: 0 }.packet()
    }
}

/// A line that is not an out-of-process packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("out-of-process line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("malformed out-of-process packet ({reason}): {excerpt}")]
    Malformed { reason: &'static str, excerpt: String },
    #[error("unknown out-of-process packet element <{0}>")]
    UnknownElement(String),
    #[error("<{element}> without the {attribute} attribute")]
    MissingAttribute {
        element: PacketKind,
        attribute: &'static str,
    },
    #[error("<{element}> with an unexpected attribute {attribute}")]
    UnexpectedAttribute { element: PacketKind, attribute: String },
    #[error("<{element}> with a malformed PSGuid {value:?}")]
    BadGuid { element: PacketKind, value: String },
    #[error("<Data> with an unknown Stream {0:?}")]
    UnknownStream(String),
    #[error("<Data> without data")]
    EmptyData,
    #[error("<Data> whose text is not base64")]
    BadBase64,
    #[error("<{0}> carries text")]
    UnexpectedText(PacketKind),
}

/// Short, printable excerpt of remote bytes for an error message.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut text = String::from_utf8_lossy(cut).escape_debug().to_string();
    if bytes.len() > MAX {
        text.push('…');
    }
    text
}

struct Parser<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn malformed(&self, reason: &'static str) -> PacketError {
        PacketError::Malformed {
            reason,
            excerpt: excerpt(self.line),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.line.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), PacketError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.malformed(reason))
        }
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn name(&mut self) -> &'a [u8] {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-' || b == b'.')
        {
            self.pos += 1;
        }
        &self.line[start..self.pos]
    }

    fn packet(mut self) -> Result<Packet, PacketError> {
        self.expect(b'<', "expected '<'")?;
        let tag = self.name();
        let kind = match PacketKind::from_tag(tag) {
            Some(kind) => kind,
            None if tag.is_empty() => return Err(self.malformed("expected an element")),
            None => return Err(PacketError::UnknownElement(excerpt(tag))),
        };
        let mut stream: Option<&[u8]> = None;
        let mut guid: Option<&[u8]> = None;
        // Attributes, then `/>` or `>`.
        let self_closing = loop {
            let spaced = self.skip_ws();
            match self.peek() {
                Some(b'/') => {
                    self.pos += 1;
                    self.expect(b'>', "expected '>' after '/'")?;
                    break true;
                }
                Some(b'>') => {
                    self.pos += 1;
                    break false;
                }
                Some(_) if spaced => {
                    let name = self.name();
                    if name.is_empty() {
                        return Err(self.malformed("expected an attribute"));
                    }
                    self.skip_ws();
                    self.expect(b'=', "expected '=' after an attribute name")?;
                    self.skip_ws();
                    let value = self.quoted()?;
                    let slot = match name {
                        b"PSGuid" => &mut guid,
                        b"Stream" if kind == PacketKind::Data => &mut stream,
                        _ => {
                            return Err(PacketError::UnexpectedAttribute {
                                element: kind,
                                attribute: excerpt(name),
                            });
                        }
                    };
                    if slot.replace(value).is_some() {
                        return Err(self.malformed("duplicate attribute"));
                    }
                }
                _ => return Err(self.malformed("expected an attribute, '/>' or '>'")),
            }
        };
        let text = if self_closing {
            &b""[..]
        } else {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b'<') {
                self.pos += 1;
            }
            let text = &self.line[start..self.pos];
            self.expect(b'<', "unterminated element")?;
            self.expect(b'/', "child elements are not allowed")?;
            if self.name() != tag {
                return Err(self.malformed("end tag does not match"));
            }
            self.skip_ws();
            self.expect(b'>', "expected '>' to close the end tag")?;
            text
        };
        if self.pos != self.line.len() {
            return Err(self.malformed("text after the element"));
        }

        let guid = guid.ok_or(PacketError::MissingAttribute {
            element: kind,
            attribute: "PSGuid",
        })?;
        let pipeline_id = std::str::from_utf8(guid)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| PacketError::BadGuid {
                element: kind,
                value: excerpt(guid),
            })?;
        let pipeline_id = (!pipeline_id.is_nil()).then_some(pipeline_id);
        if let Some(packet) = Packet::control(kind, pipeline_id) {
            if !text.is_empty() {
                return Err(PacketError::UnexpectedText(kind));
            }
            return Ok(packet);
        }
        let stream = stream.ok_or(PacketError::MissingAttribute {
            element: kind,
            attribute: "Stream",
        })?;
        let stream = Stream::parse(stream).ok_or_else(|| PacketError::UnknownStream(excerpt(stream)))?;
        if text.is_empty() {
            return Err(PacketError::EmptyData);
        }
        let data = BASE64.decode(text).map_err(|_| PacketError::BadBase64)?;
        Ok(Packet::Data {
            stream,
            pipeline_id,
            data: Bytes::from(data),
        })
    }

    /// A quoted attribute value; entities and `<` are refused (PSGuid and Stream never need them).
    fn quoted(&mut self) -> Result<&'a [u8], PacketError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.malformed("expected a quoted attribute value")),
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b) if b == quote => break,
                Some(b'<' | b'&') => return Err(self.malformed("'<' or '&' in an attribute value")),
                Some(_) => self.pos += 1,
                None => return Err(self.malformed("unterminated attribute value")),
            }
        }
        let value = &self.line[start..self.pos];
        self.pos += 1;
        Ok(value)
    }
}

/// Turns bytes from the peer into packets, line by line.
///
/// [`feed`](PacketReader::feed) what arrives, then call [`next_packet`](PacketReader::next_packet) until it
/// returns `Ok(None)`. Empty lines are skipped. After an error the reader keeps returning it: the
/// peer is not speaking this framing.
#[derive(Debug)]
pub struct PacketReader {
    buf: BytesMut,
    /// How far `buf` is known to hold no `\n`.
    scanned: usize,
    max_line_len: usize,
    failed: Option<PacketError>,
}

impl Default for PacketReader {
    fn default() -> Self {
        PacketReader::new()
    }
}

impl PacketReader {
    pub fn new() -> PacketReader {
        PacketReader::with_max_line_len(DEFAULT_MAX_LINE_LEN)
    }

    /// A reader that refuses lines (without their line end) longer than `max_line_len` bytes.
    pub fn with_max_line_len(max_line_len: usize) -> PacketReader {
        PacketReader {
            buf: BytesMut::new(),
            scanned: 0,
            max_line_len,
            failed: None,
        }
    }

    /// Adds bytes received from the peer.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next packet, `Ok(None)` when no further whole line has arrived.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.step() {
            Ok(packet) => Ok(packet),
            Err(err) => {
                self.buf = BytesMut::new();
                self.scanned = 0;
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Packet>, PacketError> {
        loop {
            let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                // A trailing '\r' may still turn out to be part of a "\r\n".
                let pending = self.buf.len() - usize::from(self.buf.ends_with(b"\r"));
                if pending > self.max_line_len {
                    return Err(PacketError::LineTooLong {
                        limit: self.max_line_len,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            self.scanned = 0;
            let line = self.buf.split_to(end);
            self.buf.advance(1);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.len() > self.max_line_len {
                return Err(PacketError::LineTooLong {
                    limit: self.max_line_len,
                });
            }
            if line.is_empty() {
                continue;
            }
            return Packet::parse_line(line).map(Some);
        }
    }

    /// Bytes of an unfinished line.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: &str = "7c4e4f3e-6f7a-4a5b-9c3d-2e1f0a9b8c7d";

    fn pid() -> Option<Uuid> {
        Some(Uuid::parse_str(PID).unwrap())
    }

    fn parse(line: &str) -> Result<Packet, PacketError> {
        Packet::parse_line(line.as_bytes())
    }

    #[test]
    fn encodes_as_powershell_does() {
        let data = Packet::data(Stream::Default, None, &b"\x00\x01hi"[..]);
        assert_eq!(
            String::from_utf8(data.encode()).unwrap(),
            "<Data Stream='Default' PSGuid='00000000-0000-0000-0000-000000000000'>AAFoaQ==</Data>\n"
        );
        let prompt = Packet::data(Stream::PromptResponse, pid(), &b"x"[..]);
        assert_eq!(
            String::from_utf8(prompt.encode()).unwrap(),
            format!("<Data Stream='PromptResponse' PSGuid='{PID}'>eA==</Data>\n")
        );
        for kind in PacketKind::ALL.into_iter().skip(1) {
            let packet = Packet::control(kind, pid()).unwrap();
            assert_eq!(
                String::from_utf8(packet.encode()).unwrap(),
                format!("<{kind} PSGuid='{PID}' />\n")
            );
            assert_eq!(packet.kind(), kind);
            assert_eq!(packet.pipeline_id(), pid());
        }
    }

    #[test]
    fn parses_what_it_encodes_and_what_peers_write() {
        let packets = [
            Packet::data(Stream::Default, None, &b"abc"[..]),
            Packet::data(Stream::PromptResponse, pid(), vec![0u8; 100]),
            Packet::DataAck { pipeline_id: None },
            Packet::CloseAck { pipeline_id: pid() },
        ];
        for packet in packets {
            assert_eq!(
                Packet::parse_line(packet.encode().strip_suffix(b"\n").unwrap()),
                Ok(packet)
            );
        }
        // Double quotes, upper-case GUIDs, braces, an explicit end tag, spaces around '=', a '\r'.
        assert_eq!(
            parse(&format!(
                "<DataAck PSGuid=\"{}\"></DataAck>\r",
                PID.to_uppercase()
            )),
            Ok(Packet::DataAck { pipeline_id: pid() })
        );
        assert_eq!(
            parse(&format!("<Signal  PSGuid = '{{{PID}}}'/>")),
            Ok(Packet::Signal { pipeline_id: pid() })
        );
        assert_eq!(
            parse("<Data PSGuid='00000000-0000-0000-0000-000000000000' Stream='promptresponse'>eA==</Data>"),
            Ok(Packet::data(Stream::PromptResponse, None, &b"x"[..]))
        );
    }

    #[test]
    fn refuses_what_powershell_refuses() {
        let guid = "PSGuid='00000000-0000-0000-0000-000000000000'";
        let cases: Vec<(String, PacketError)> = vec![
            (
                format!("<Foo {guid} />"),
                PacketError::UnknownElement("Foo".into()),
            ),
            (
                "<DataAck />".into(),
                PacketError::MissingAttribute {
                    element: PacketKind::DataAck,
                    attribute: "PSGuid",
                },
            ),
            (
                format!("<Data {guid}>eA==</Data>"),
                PacketError::MissingAttribute {
                    element: PacketKind::Data,
                    attribute: "Stream",
                },
            ),
            (
                format!("<Close Stream='Default' {guid} />"),
                PacketError::UnexpectedAttribute {
                    element: PacketKind::Close,
                    attribute: "Stream".into(),
                },
            ),
            (
                "<Close PSGuid='nope' />".into(),
                PacketError::BadGuid {
                    element: PacketKind::Close,
                    value: "nope".into(),
                },
            ),
            (
                format!("<Data Stream='Other' {guid}>eA==</Data>"),
                PacketError::UnknownStream("Other".into()),
            ),
            (
                format!("<Data Stream='Default' {guid}></Data>"),
                PacketError::EmptyData,
            ),
            (
                format!("<Data Stream='Default' {guid} />"),
                PacketError::EmptyData,
            ),
            (
                format!("<Data Stream='Default' {guid}>e A==</Data>"),
                PacketError::BadBase64,
            ),
            (
                format!("<Data Stream='Default' {guid}>eA=</Data>"),
                PacketError::BadBase64,
            ),
            (
                format!("<Command {guid}>x</Command>"),
                PacketError::UnexpectedText(PacketKind::Command),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(&line), Err(expected), "{line}");
        }
        for line in [
            format!("<Close {guid} /> "),
            format!(" <Close {guid} />"),
            format!("<Close {guid} /><Close {guid} />"),
            format!("<Close {guid} {guid} />"),
            format!("<Close {guid}></Data>"),
            format!("<Data Stream='Default' {guid}><x/></Data>"),
            format!("<Data Stream='Default' {guid}>eA=="),
            "<Close PSGuid='&amp;' />".into(),
            "<Close PSGuid='0000".into(),
            "<!DOCTYPE x>".into(),
            "<?xml version='1.0'?>".into(),
            "<".into(),
            "plain text".into(),
            format!("<Data Stream='Default'{guid}>eA==</Data>"),
        ] {
            assert!(
                matches!(parse(&line), Err(PacketError::Malformed { .. })),
                "{line}: {:?}",
                parse(&line)
            );
        }
    }

    #[test]
    fn reader_splits_lines_in_any_chunking() {
        let mut wire = Vec::new();
        let packets = vec![
            Packet::data(Stream::Default, None, &b"one"[..]),
            Packet::DataAck { pipeline_id: None },
            Packet::CommandAck { pipeline_id: pid() },
            Packet::data(Stream::Default, pid(), vec![9u8; 300]),
        ];
        for (i, packet) in packets.iter().enumerate() {
            let line = packet.encode();
            if i % 2 == 1 {
                // "\r\n" line ends and empty lines are accepted.
                wire.extend_from_slice(&line[..line.len() - 1]);
                wire.extend_from_slice(b"\r\n\r\n");
            } else {
                wire.extend_from_slice(&line);
            }
        }
        for split in 1..wire.len() {
            let mut reader = PacketReader::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                reader.feed(chunk);
                while let Some(packet) = reader.next_packet().unwrap() {
                    out.push(packet);
                }
            }
            assert_eq!(out, packets);
            assert_eq!(reader.buffered_len(), 0);
        }
    }

    #[test]
    fn reader_bounds_lines_and_stays_failed() {
        let mut reader = PacketReader::with_max_line_len(50);
        reader.feed(&[b'<'; 50]);
        assert_eq!(reader.next_packet(), Ok(None));
        reader.feed(b"\r");
        assert_eq!(reader.next_packet(), Ok(None));
        reader.feed(b"<");
        assert_eq!(reader.next_packet(), Err(PacketError::LineTooLong { limit: 50 }));
        reader.feed(b"<DataAck PSGuid='00000000-0000-0000-0000-000000000000' />\n");
        assert_eq!(reader.next_packet(), Err(PacketError::LineTooLong { limit: 50 }));

        let mut reader = PacketReader::new();
        reader.feed(b"garbage\n<DataAck PSGuid='00000000-0000-0000-0000-000000000000' />\n");
        assert!(matches!(reader.next_packet(), Err(PacketError::Malformed { .. })));
        assert!(reader.next_packet().is_err());
    }
}
