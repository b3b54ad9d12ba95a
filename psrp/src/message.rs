//! PSRP messages (MS-PSRP 2.2.1): destination, message type, runspace pool and pipeline ids, data.
//!
//! ```text
//! Destination (u32 LE) | MessageType (u32 LE) | RPID (GUID) | PID (GUID) | Data (UTF-8 XML)
//! ```
//!
//! The GUIDs are in .NET's `Guid.ToByteArray()` order (MS-DTYP 2.3.4.2: the first three groups
//! little-endian, the last eight bytes as written), which is `Uuid::to_bytes_le`. The data is a CLIXML
//! fragment; PowerShell writes it with a UTF-8 byte order mark (its XmlWriter is created with
//! `UTF8Encoding.UTF8`), other clients (pypsrp, psrpcore) without. [`Message::decode`] strips one BOM,
//! [`Message::encode`] writes one as PowerShell does and [`Message::encode_with`] lets the caller choose.

use std::fmt;

use bytes::Bytes;
use uuid::Uuid;

/// The UTF-8 byte order mark PowerShell puts in front of every message's data.
pub const UTF8_BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Who a message is for (MS-PSRP 2.2.1, `Destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// 0x00000001: a message the server sends to the client.
    Client,
    /// 0x00000002: a message the client sends to the server.
    Server,
}

impl Destination {
    pub const fn code(self) -> u32 {
        match self {
            Destination::Client => 0x0000_0001,
            Destination::Server => 0x0000_0002,
        }
    }

    pub const fn from_code(code: u32) -> Option<Destination> {
        match code {
            0x0000_0001 => Some(Destination::Client),
            0x0000_0002 => Some(Destination::Server),
            _ => None,
        }
    }
}

macro_rules! message_types {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal; )*) => {
        /// The PSRP message types (MS-PSRP 2.2.1 and 2.2.2.x) with their wire codes.
        ///
        /// A code this crate does not know is kept as [`MessageType::Unknown`]: PowerShell ignores message
        /// types it does not know, so a client must be able to read past them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $( $(#[$doc])* $variant, )*
            /// A code that is none of the above, kept as it was on the wire.
            Unknown(u32),
        }

        impl MessageType {
            /// Every known message type, in ascending code order.
            pub const ALL: &'static [MessageType] = &[ $( MessageType::$variant, )* ];

            /// The type for a wire code; codes this crate does not know become [`MessageType::Unknown`].
            pub const fn from_code(code: u32) -> MessageType {
                match code {
                    $( $code => MessageType::$variant, )*
                    other => MessageType::Unknown(other),
                }
            }

            /// The wire code.
            pub const fn code(self) -> u32 {
                match self {
                    $( MessageType::$variant => $code, )*
                    MessageType::Unknown(code) => code,
                }
            }

            /// The name MS-PSRP gives the type (`SESSION_CAPABILITY`), or `None` for an unknown code.
            pub const fn spec_name(self) -> Option<&'static str> {
                match self {
                    $( MessageType::$variant => Some($name), )*
                    MessageType::Unknown(_) => None,
                }
            }
        }
    };
}

// Codes from MS-PSRP 2.2.1, checked against psrpcore 0.3.1 (`PSRPMessageType`) and against the
// recorded exchanges with Windows hosts that pypsrp keeps as test data (psrp/tests/wire_vectors.rs).
message_types! {
    /// 2.2.2.1: the client's and the server's protocol versions.
    SessionCapability = 0x0001_0002, "SESSION_CAPABILITY";
    /// 2.2.2.2: opens a runspace pool (min/max runspaces, thread options, host info, arguments).
    InitRunspacePool = 0x0001_0004, "INIT_RUNSPACEPOOL";
    /// 2.2.2.3: the client's public key for the session key exchange.
    PublicKey = 0x0001_0005, "PUBLIC_KEY";
    /// 2.2.2.4: the session key, encrypted with the client's public key.
    EncryptedSessionKey = 0x0001_0006, "ENCRYPTED_SESSION_KEY";
    /// 2.2.2.5: the server asks the client for its public key.
    PublicKeyRequest = 0x0001_0007, "PUBLIC_KEY_REQUEST";
    /// 2.2.2.29: connects to a disconnected runspace pool.
    ConnectRunspacePool = 0x0001_0008, "CONNECT_RUNSPACEPOOL";
    /// 2.2.2.6: sets the pool's maximum number of runspaces.
    SetMaxRunspaces = 0x0002_1002, "SET_MAX_RUNSPACES";
    /// 2.2.2.7: sets the pool's minimum number of runspaces.
    SetMinRunspaces = 0x0002_1003, "SET_MIN_RUNSPACES";
    /// 2.2.2.8: the answer to SET_MAX/MIN_RUNSPACES and GET_AVAILABLE_RUNSPACES.
    RunspaceAvailability = 0x0002_1004, "RUNSPACE_AVAILABILITY";
    /// 2.2.2.9: the runspace pool's state (and the error that broke it).
    RunspacePoolState = 0x0002_1005, "RUNSPACEPOOL_STATE";
    /// 2.2.2.10: creates and starts a pipeline.
    CreatePipeline = 0x0002_1006, "CREATE_PIPELINE";
    /// 2.2.2.11: asks how many runspaces are available.
    GetAvailableRunspaces = 0x0002_1007, "GET_AVAILABLE_RUNSPACES";
    /// 2.2.2.12: an event forwarded from the server.
    UserEvent = 0x0002_1008, "USER_EVENT";
    /// 2.2.2.13: the session configuration's private data.
    ApplicationPrivateData = 0x0002_1009, "APPLICATION_PRIVATE_DATA";
    /// 2.2.2.14: Get-Command metadata.
    GetCommandMetadata = 0x0002_100A, "GET_COMMAND_METADATA";
    /// 2.2.2.30: the pool's min/max runspaces, sent after CONNECT_RUNSPACEPOOL.
    RunspacePoolInitData = 0x0002_100B, "RUNSPACEPOOL_INIT_DATA";
    /// 2.2.2.31: resets the runspace's state (variables) as PowerShell 5 does.
    ResetRunspaceState = 0x0002_100C, "RESET_RUNSPACE_STATE";
    /// 2.2.2.15: a host method called on the pool's host.
    RunspacePoolHostCall = 0x0002_1100, "RUNSPACEPOOL_HOST_CALL";
    /// 2.2.2.16: the client's answer to RUNSPACEPOOL_HOST_CALL.
    RunspacePoolHostResponse = 0x0002_1101, "RUNSPACEPOOL_HOST_RESPONSE";
    /// 2.2.2.17: one input object for a pipeline.
    PipelineInput = 0x0004_1002, "PIPELINE_INPUT";
    /// 2.2.2.18: no more input for a pipeline.
    EndOfPipelineInput = 0x0004_1003, "END_OF_PIPELINE_INPUT";
    /// 2.2.2.19: one output object.
    PipelineOutput = 0x0004_1004, "PIPELINE_OUTPUT";
    /// 2.2.2.20: one record of the error stream.
    ErrorRecord = 0x0004_1005, "ERROR_RECORD";
    /// 2.2.2.21: the pipeline's state (and, when Failed, its error record).
    PipelineState = 0x0004_1006, "PIPELINE_STATE";
    /// 2.2.2.22: one record of the debug stream.
    DebugRecord = 0x0004_1007, "DEBUG_RECORD";
    /// 2.2.2.23: one record of the verbose stream.
    VerboseRecord = 0x0004_1008, "VERBOSE_RECORD";
    /// 2.2.2.24: one record of the warning stream.
    WarningRecord = 0x0004_1009, "WARNING_RECORD";
    /// 2.2.2.25: one progress record.
    ProgressRecord = 0x0004_1010, "PROGRESS_RECORD";
    /// 2.2.2.26: one record of the information stream (PowerShell 5 and later).
    InformationRecord = 0x0004_1011, "INFORMATION_RECORD";
    /// 2.2.2.27: a host method called on the pipeline's host.
    PipelineHostCall = 0x0004_1100, "PIPELINE_HOST_CALL";
    /// 2.2.2.28: the client's answer to PIPELINE_HOST_CALL.
    PipelineHostResponse = 0x0004_1101, "PIPELINE_HOST_RESPONSE";
}

impl MessageType {
    /// Whether the code is one this crate knows.
    pub const fn is_known(self) -> bool {
        !matches!(self, MessageType::Unknown(_))
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spec_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown message type 0x{:08X}", self.code()),
        }
    }
}

/// Whether [`Message::encode_with`] writes a UTF-8 byte order mark in front of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bom {
    /// As PowerShell does.
    #[default]
    Write,
    /// As pypsrp and psrpcore do.
    Omit,
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("PSRP message of {len} bytes is shorter than its 40-byte header")]
    TooShort { len: usize },
    #[error("PSRP message with unknown destination 0x{0:08X}")]
    UnknownDestination(u32),
    #[error("PSRP message data is not UTF-8 (invalid byte at {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
}

/// One PSRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub destination: Destination,
    pub message_type: MessageType,
    /// RPID: the runspace pool the message belongs to.
    pub runspace_pool_id: Uuid,
    /// PID: the pipeline the message belongs to, `None` (the nil GUID on the wire) for the pool.
    pub pipeline_id: Option<Uuid>,
    /// The CLIXML data, without a byte order mark.
    pub data: Bytes,
}

impl Message {
    /// Length of the fixed header before the data.
    pub const HEADER_LEN: usize = 40;

    /// A message; a nil `pipeline_id` is the same as `None`, and a leading BOM in `data` is dropped.
    pub fn new(
        destination: Destination,
        message_type: MessageType,
        runspace_pool_id: Uuid,
        pipeline_id: Option<Uuid>,
        data: impl Into<Bytes>,
    ) -> Message {
        let mut data = data.into();
        if data.starts_with(UTF8_BOM) {
            data = data.slice(UTF8_BOM.len()..);
        }
        Message {
            destination,
            message_type,
            runspace_pool_id,
            pipeline_id: pipeline_id.filter(|id| !id.is_nil()),
            data,
        }
    }

    /// Decodes one message (the bytes of one defragmented object). Zero-copy for `Bytes` input.
    pub fn decode(bytes: impl Into<Bytes>) -> Result<Message, MessageError> {
        let bytes: Bytes = bytes.into();
        let Some(header) = bytes.first_chunk::<{ Message::HEADER_LEN }>() else {
            return Err(MessageError::TooShort { len: bytes.len() });
        };
        let destination = u32::from_le_bytes(le4(&header[0..4]));
        let destination =
            Destination::from_code(destination).ok_or(MessageError::UnknownDestination(destination))?;
        let message_type = MessageType::from_code(u32::from_le_bytes(le4(&header[4..8])));
        let runspace_pool_id = Uuid::from_bytes_le(le16(&header[8..24]));
        let pipeline_id = Uuid::from_bytes_le(le16(&header[24..40]));
        let mut data = bytes.slice(Message::HEADER_LEN..);
        if data.starts_with(UTF8_BOM) {
            data = data.slice(UTF8_BOM.len()..);
        }
        Ok(Message {
            destination,
            message_type,
            runspace_pool_id,
            pipeline_id: (!pipeline_id.is_nil()).then_some(pipeline_id),
            data,
        })
    }

    /// Encodes the message with a byte order mark in front of the data, as PowerShell does.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(Bom::Write)
    }

    /// Encodes the message, writing a byte order mark or not.
    pub fn encode_with(&self, bom: Bom) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len(bom));
        self.encode_into(&mut out, bom);
        out
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>, bom: Bom) {
        out.reserve(self.encoded_len(bom));
        out.extend_from_slice(&self.destination.code().to_le_bytes());
        out.extend_from_slice(&self.message_type.code().to_le_bytes());
        out.extend_from_slice(&self.runspace_pool_id.to_bytes_le());
        out.extend_from_slice(&self.pipeline_id.unwrap_or(Uuid::nil()).to_bytes_le());
        if bom == Bom::Write {
            out.extend_from_slice(UTF8_BOM);
        }
        out.extend_from_slice(&self.data);
    }

    /// Length of the encoded message.
    pub fn encoded_len(&self, bom: Bom) -> usize {
        Message::HEADER_LEN + if bom == Bom::Write { UTF8_BOM.len() } else { 0 } + self.data.len()
    }

    /// The data as text (it is UTF-8 XML on the wire).
    pub fn xml(&self) -> Result<&str, MessageError> {
        std::str::from_utf8(&self.data).map_err(|e| MessageError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })
    }
}

fn le4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(bytes);
    out
}

fn le16(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPID: &str = "846a0576-dc51-244f-9262-ca2a55464b2b";

    #[test]
    fn guid_bytes_are_in_dotnet_order() {
        // .NET: new Guid("00112233-4455-6677-8899-aabbccddeeff").ToByteArray()
        //   = 33 22 11 00 55 44 77 66 88 99 aa bb cc dd ee ff
        let id = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let msg = Message::new(
            Destination::Server,
            MessageType::SessionCapability,
            id,
            None,
            &b"<Obj/>"[..],
        );
        let bytes = msg.encode_with(Bom::Omit);
        assert_eq!(&bytes[..8], &[2, 0, 0, 0, 0x02, 0x00, 0x01, 0x00]);
        assert_eq!(
            &bytes[8..24],
            &[
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
                0xff
            ]
        );
        assert_eq!(&bytes[24..40], &[0; 16]);
        assert_eq!(&bytes[40..], b"<Obj/>");
    }

    #[test]
    fn decodes_a_recorded_session_capability() {
        // The first message of pypsrp's recorded test_psrp_open_runspace exchange (without fragment header).
        let mut wire = vec![0x02, 0, 0, 0, 0x02, 0, 0x01, 0];
        wire.extend_from_slice(&[
            0x76, 0x05, 0x6a, 0x84, 0x51, 0xdc, 0x4f, 0x24, 0x92, 0x62, 0xca, 0x2a, 0x55, 0x46, 0x4b, 0x2b,
        ]);
        wire.extend_from_slice(&[0; 16]);
        wire.extend_from_slice(b"<Obj RefId=\"0\"><MS/></Obj>");
        let msg = Message::decode(wire.clone()).unwrap();
        assert_eq!(msg.destination, Destination::Server);
        assert_eq!(msg.message_type, MessageType::SessionCapability);
        assert_eq!(msg.runspace_pool_id, Uuid::parse_str(RPID).unwrap());
        assert_eq!(msg.pipeline_id, None);
        assert_eq!(msg.xml().unwrap(), "<Obj RefId=\"0\"><MS/></Obj>");
        assert_eq!(msg.encode_with(Bom::Omit), wire);
    }

    #[test]
    fn bom_is_stripped_on_decode_and_written_on_encode() {
        let pid = Uuid::from_u128(0x1234);
        let msg = Message::new(
            Destination::Client,
            MessageType::PipelineOutput,
            Uuid::from_u128(7),
            Some(pid),
            "<S>x</S>",
        );
        let wire = msg.encode();
        assert_eq!(&wire[40..43], UTF8_BOM);
        let back = Message::decode(wire).unwrap();
        assert_eq!(back, msg);
        assert_eq!(&back.data[..], b"<S>x</S>");
        // Only one BOM is stripped; new() drops one given in the data.
        let with_bom = Message::new(
            Destination::Client,
            MessageType::PipelineOutput,
            Uuid::nil(),
            None,
            "\u{feff}<S/>",
        );
        assert_eq!(&with_bom.data[..], b"<S/>");
        assert_eq!(with_bom.encode().len(), 40 + 3 + 4);
    }

    #[test]
    fn nil_pipeline_id_is_none() {
        let msg = Message::new(
            Destination::Server,
            MessageType::CreatePipeline,
            Uuid::nil(),
            Some(Uuid::nil()),
            "",
        );
        assert_eq!(msg.pipeline_id, None);
    }

    #[test]
    fn unknown_types_are_kept_and_bad_headers_refused() {
        let msg = Message::new(
            Destination::Client,
            MessageType::from_code(0x0004_2000),
            Uuid::nil(),
            None,
            "",
        );
        let back = Message::decode(msg.encode()).unwrap();
        assert_eq!(back.message_type, MessageType::Unknown(0x0004_2000));
        assert!(!back.message_type.is_known());
        assert_eq!(back.message_type.to_string(), "unknown message type 0x00042000");
        assert_eq!(
            Message::decode(vec![0u8; 39]),
            Err(MessageError::TooShort { len: 39 })
        );
        let mut bad = msg.encode();
        bad[0] = 3;
        assert_eq!(Message::decode(bad), Err(MessageError::UnknownDestination(3)));
    }

    #[test]
    fn every_code_round_trips() {
        assert_eq!(MessageType::ALL.len(), 31);
        for &ty in MessageType::ALL {
            assert_eq!(MessageType::from_code(ty.code()), ty);
            assert!(ty.spec_name().is_some());
        }
        let mut codes: Vec<u32> = MessageType::ALL.iter().map(|t| t.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), MessageType::ALL.len());
        assert_eq!(MessageType::PipelineHostResponse.code(), 0x0004_1101);
        assert_eq!(MessageType::InformationRecord.to_string(), "INFORMATION_RECORD");
    }

    #[test]
    fn not_utf8_is_reported() {
        let msg = Message::new(
            Destination::Client,
            MessageType::PipelineOutput,
            Uuid::nil(),
            None,
            &b"<S>\xff</S>"[..],
        );
        assert_eq!(msg.xml(), Err(MessageError::NotUtf8 { valid_up_to: 3 }));
    }
}
