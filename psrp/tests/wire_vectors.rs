//! The fragment and message layers against real traffic: pypsrp's recorded WinRM exchanges with
//! Windows hosts (see tests/vectors/README.md for the source, version, hash and licence).
//!
//! Every base64 PSRP payload of every recording is defragmented per shell, command and direction, every
//! message header decoded (every type must be known), every message's data checked to be well-formed
//! XML, and every message re-encoded and re-fragmented and compared byte for byte with the recorded
//! bytes: pypsrp's client messages and also Windows PowerShell's server messages (32 KiB fragments
//! and a byte order mark, as this crate writes by default).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use psrp::fragment::{
    DEFAULT_MAX_FRAGMENT_SIZE, DefragmentError, Defragmenter, FragmentHeader, Fragmenter, HEADER_LEN,
};
use psrp::message::{Bom, Destination, Message, MessageType, UTF8_BOM};
use quick_xml::events::Event;

mod common;
use common::{attr, element_text, payloads, vectors_dir};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Dir {
    /// Sent by the client (pypsrp) in a request.
    Client,
    /// Sent by the server (PowerShell on Windows) in a response.
    Server,
}

/// One message as recorded: its fragments' bytes and the message they join into.
struct Recorded {
    dir: Dir,
    object_id: u64,
    fragments: Vec<Vec<u8>>,
    message: Bytes,
}

/// Defragmentation state of one (shell, command, direction) stream.
#[derive(Default)]
struct StreamState {
    defrag: Defragmenter,
    /// Raw fragment bytes of the objects in flight, by object id, to compare with re-encoding.
    raw: HashMap<u64, Vec<Vec<u8>>>,
    /// Objects finished (end fragment seen) in order, waiting to be paired with the defragmenter's
    /// messages.
    finished: Vec<(u64, Vec<Vec<u8>>)>,
}

#[derive(Default)]
struct Stats {
    files: usize,
    files_with_psrp: usize,
    payloads: usize,
    fragments: usize,
    bytes: usize,
    messages: BTreeMap<(String, Dir), usize>,
    bom: BTreeMap<(Dir, bool), usize>,
    reencoded_identical: BTreeMap<Dir, usize>,
    refragmented_identical: BTreeMap<Dir, usize>,
    repacked_identical: BTreeMap<Dir, usize>,
    repack_skipped: usize,
    multi_fragment: BTreeMap<Dir, usize>,
    id_order: BTreeMap<(&'static str, &'static str), usize>,
    anomalies: Vec<(String, DefragmentError)>,
}

fn check_xml(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut elements = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("{e} at {}", reader.buffer_position()))?
        {
            Event::Start(_) => {
                depth += 1;
                elements += 1;
            }
            Event::End(_) => depth = depth.checked_sub(1).ok_or("unbalanced end tag")?,
            Event::Empty(_) => elements += 1,
            Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("text outside the root element".into());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} elements not closed"));
    }
    if elements == 0 {
        return Err("no element".into());
    }
    Ok(())
}

/// Splits a payload into whole fragments, carrying an incomplete tail to the next payload.
fn split_fragments(pending: &mut Vec<u8>, data: &[u8]) -> Vec<Vec<u8>> {
    pending.extend_from_slice(data);
    let mut out = Vec::new();
    while let Some(header) = FragmentHeader::parse(pending) {
        let len = HEADER_LEN + header.blob_len as usize;
        if pending.len() < len {
            break;
        }
        out.push(pending.drain(..len).collect());
    }
    out
}

fn scan_file(
    path: &Path,
    stats: &mut Stats,
    recorded: &mut Vec<Recorded>,
    packets: &mut Vec<(Dir, Vec<u8>)>,
) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let mut streams: BTreeMap<(Dir, String, String), StreamState> = BTreeMap::new();
    let mut pending: HashMap<(Dir, String, String), Vec<u8>> = HashMap::new();
    let mut psrp_shell = false;
    let mut shell_id = String::new();
    let mut used = false;
    for line in text.lines() {
        let (dir, body) = if let Some(body) = line.strip_prefix("- request: ") {
            (Dir::Client, body)
        } else if let Some(body) = line.strip_prefix("  response: ") {
            (Dir::Server, body)
        } else {
            continue;
        };
        if !body.starts_with('<') {
            continue;
        }
        if dir == Dir::Client {
            let uri = element_text(body, "wsman:ResourceURI").unwrap_or("");
            psrp_shell = uri.starts_with("http://schemas.microsoft.com/powershell/");
            shell_id = common::shell_id(body);
        }
        if !psrp_shell {
            continue;
        }
        for payload in payloads(body) {
            let data = BASE64
                .decode(payload.text)
                .unwrap_or_else(|e| panic!("{name}: payload is not base64 ({e}): {:.40}", payload.text));
            used = true;
            stats.payloads += 1;
            stats.bytes += data.len();
            packets.push((dir, data.clone()));
            let key = (
                dir,
                shell_id.clone(),
                payload.command_id.unwrap_or("").to_uppercase(),
            );
            let stream = streams.entry(key.clone()).or_default();
            for fragment in split_fragments(pending.entry(key).or_default(), &data) {
                stats.fragments += 1;
                let header = FragmentHeader::parse(&fragment).unwrap();
                let raw = stream.raw.entry(header.object_id).or_default();
                raw.push(fragment);
                if header.end {
                    let raw = stream.raw.remove(&header.object_id).unwrap_or_default();
                    stream.finished.push((header.object_id, raw));
                }
            }
            stream.defrag.feed(&data);
            let mut messages = Vec::new();
            loop {
                match stream.defrag.next_message() {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(err) => {
                        stats.anomalies.push((name.clone(), err));
                        stream.defrag = Defragmenter::new();
                        stream.raw.clear();
                        stream.finished.clear();
                        messages.clear();
                        break;
                    }
                }
            }
            assert!(
                messages.len() <= stream.finished.len(),
                "{name}: more messages than end fragments"
            );
            for (message, (object_id, fragments)) in messages.into_iter().zip(stream.finished.drain(..)) {
                let joined: Vec<u8> = fragments.iter().flat_map(|f| f[HEADER_LEN..].to_vec()).collect();
                assert_eq!(joined, message, "{name}: object {object_id} joins differently");
                recorded.push(Recorded {
                    dir,
                    object_id,
                    fragments,
                    message,
                });
            }
        }
    }
    for ((dir, shell, command), stream) in &streams {
        if let Err(err) = stream.defrag.finish() {
            let what = format!("{name} ({dir:?} shell {shell} command {command})");
            stats.anomalies.push((what, err));
        }
    }
    stats.files += 1;
    stats.files_with_psrp += usize::from(used);
}

fn check_message(rec: &Recorded, stats: &mut Stats) {
    let msg =
        Message::decode(rec.message.clone()).unwrap_or_else(|e| panic!("object {}: {e}", rec.object_id));
    assert!(
        msg.message_type.is_known(),
        "unknown message type {}",
        msg.message_type
    );
    let expected_destination = match rec.dir {
        Dir::Client => Destination::Server,
        Dir::Server => Destination::Client,
    };
    assert_eq!(
        msg.destination, expected_destination,
        "{} object {}",
        msg.message_type, rec.object_id
    );
    *stats
        .messages
        .entry((msg.message_type.to_string(), rec.dir))
        .or_default() += 1;
    let had_bom = rec.message[Message::HEADER_LEN..].starts_with(UTF8_BOM);
    *stats.bom.entry((rec.dir, had_bom)).or_default() += 1;
    if msg.message_type == MessageType::EndOfPipelineInput {
        // MS-PSRP 2.2.2.18: "the Data field is empty".
        assert!(msg.data.is_empty(), "END_OF_PIPELINE_INPUT with data");
    } else if let Err(err) = check_xml(&msg.data) {
        panic!(
            "{} object {}: data is not well-formed XML: {err}\n{:.300}",
            msg.message_type,
            rec.object_id,
            msg.xml().unwrap_or("(not UTF-8)")
        );
    }

    // Header and data, byte for byte.
    let bom = if had_bom { Bom::Write } else { Bom::Omit };
    let encoded = msg.encode_with(bom);
    assert_eq!(
        encoded, rec.message,
        "{} object {}: re-encoded message differs",
        msg.message_type, rec.object_id
    );
    *stats.reencoded_identical.entry(rec.dir).or_default() += 1;

    // Fragments, byte for byte: the recorded first fragment's size when there are several (PowerShell
    // uses 32 KiB), else any size the message fits in.
    let size = if rec.fragments.len() > 1 {
        *stats.multi_fragment.entry(rec.dir).or_default() += 1;
        rec.fragments[0].len()
    } else {
        DEFAULT_MAX_FRAGMENT_SIZE.max(rec.fragments[0].len())
    };
    let mut fragmenter = Fragmenter::with_max_fragment_size(size).unwrap();
    fragmenter.set_next_object_id(rec.object_id);
    let fragments: Vec<Vec<u8>> = fragmenter
        .fragment(&encoded)
        .into_iter()
        .map(|f| f.to_vec())
        .collect();
    assert_eq!(
        fragments, rec.fragments,
        "{} object {}: re-fragmented bytes differ",
        msg.message_type, rec.object_id
    );
    *stats.refragmented_identical.entry(rec.dir).or_default() += 1;
}

/// A recorded payload that holds whole messages only is what `Fragmenter::pack` makes of them.
fn check_packet(dir: Dir, packet: &[u8], stats: &mut Stats) {
    let mut rest = packet;
    let mut messages = Vec::new();
    let mut object_ids = Vec::new();
    while let Some(header) = FragmentHeader::parse(rest) {
        let len = HEADER_LEN + header.blob_len as usize;
        if !(header.start && header.end) || rest.len() < len {
            stats.repack_skipped += 1;
            return;
        }
        messages.push(&rest[HEADER_LEN..len]);
        object_ids.push(header.object_id);
        rest = &rest[len..];
    }
    if !rest.is_empty() || object_ids.windows(2).any(|w| w[1] != w[0] + 1) {
        stats.repack_skipped += 1;
        return;
    }
    let mut fragmenter = Fragmenter::with_max_fragment_size(packet.len()).unwrap();
    fragmenter.set_next_object_id(object_ids[0]);
    let packed = fragmenter.pack(messages, packet.len()).unwrap();
    assert_eq!(packed, vec![packet.to_vec()], "re-packed payload differs");
    *stats.repacked_identical.entry(dir).or_default() += 1;
}

#[test]
fn recorded_windows_exchanges() {
    let Some(dir) = vectors_dir() else {
        eprintln!();
        eprintln!("################################################################################");
        eprintln!("## SKIPPED: no PSRP vectors. Set PSRP_VECTORS_DIR, or let tests/vectors/fetch.sh ##");
        eprintln!("## download pypsrp 0.9.1's sdist (network needed). Nothing was checked.         ##");
        eprintln!("################################################################################");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    files.sort();
    assert!(
        files.len() >= 60,
        "only {} recordings in {}",
        files.len(),
        dir.display()
    );

    let mut stats = Stats::default();
    let mut recorded = Vec::new();
    let mut packets = Vec::new();
    for file in &files {
        scan_file(file, &mut stats, &mut recorded, &mut packets);
    }
    for rec in &recorded {
        check_message(rec, &mut stats);
    }
    for (dir, packet) in &packets {
        check_packet(*dir, packet, &mut stats);
    }
    let shell_ids_vs_headers = relate_ids(&files);
    stats.id_order = shell_ids_vs_headers;

    eprintln!("PSRP vectors from {}", dir.display());
    eprintln!(
        "{} recordings, {} with PSRP; {} payloads, {} fragments, {} bytes; {} messages",
        stats.files,
        stats.files_with_psrp,
        stats.payloads,
        stats.fragments,
        stats.bytes,
        recorded.len()
    );
    eprintln!("{:<28} {:>7} {:>7}", "message type", "client", "server");
    for ty in MessageType::ALL {
        let name = ty.to_string();
        let client = stats
            .messages
            .get(&(name.clone(), Dir::Client))
            .copied()
            .unwrap_or(0);
        let server = stats
            .messages
            .get(&(name.clone(), Dir::Server))
            .copied()
            .unwrap_or(0);
        eprintln!("{name:<28} {client:>7} {server:>7}  0x{:08X}", ty.code());
    }
    eprintln!("data with a BOM (dir, bom): {:?}", stats.bom);
    eprintln!("re-encoded byte-identical: {:?}", stats.reencoded_identical);
    eprintln!(
        "re-fragmented byte-identical: {:?} (multi-fragment: {:?})",
        stats.refragmented_identical, stats.multi_fragment
    );
    eprintln!(
        "payloads re-packed byte-identical: {:?} (not whole messages, skipped: {})",
        stats.repacked_identical, stats.repack_skipped
    );
    eprintln!(
        "header ids vs WS-Management ids (id, byte order): {:?}",
        stats.id_order
    );
    eprintln!("anomalies in the recordings: {:?}", stats.anomalies);

    // Every recorded message type is known (checked per message above), and the client side's
    // messages all came back byte for byte.
    let client_messages: usize = stats
        .messages
        .iter()
        .filter(|((_, d), _)| *d == Dir::Client)
        .map(|(_, n)| n)
        .sum();
    assert!(
        client_messages > 200,
        "too few client messages: {client_messages}"
    );
    assert_eq!(
        stats.reencoded_identical.get(&Dir::Client),
        Some(&client_messages)
    );
    assert_eq!(
        stats.refragmented_identical.values().sum::<usize>(),
        recorded.len()
    );
    // The one known defect of the recordings: a trimmed fetch_file exchange, where only fragments 0, 4
    // and 8 of object 6 are left (after the first error the stream restarts, so 8 lacks a start).
    let fetch_file = "test_client_fetch_file.yml".to_string();
    assert_eq!(
        stats.anomalies,
        vec![
            (
                fetch_file.clone(),
                DefragmentError::OutOfOrder {
                    object_id: 6,
                    expected: 1,
                    got: 4
                }
            ),
            (
                fetch_file,
                DefragmentError::MissingStart {
                    object_id: 6,
                    fragment_id: 8
                }
            ),
        ],
    );
}

/// How the runspace pool id in the headers relates to the WS-Management ShellId, and the pipeline
/// id to the CommandId: .NET (little-endian first groups) or RFC (big-endian) byte order. For the record
/// only; Windows echoes what it gets, so the recordings do not decide it.
fn relate_ids(files: &[PathBuf]) -> BTreeMap<(&'static str, &'static str), usize> {
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let Some(body) = line.strip_prefix("- request: ") else {
                continue;
            };
            if !element_text(body, "wsman:ResourceURI")
                .unwrap_or("")
                .starts_with("http://schemas.microsoft.com/powershell/")
            {
                continue;
            }
            let shell = body
                .find("<rsp:Shell ")
                .and_then(|at| attr(&body[at..], "ShellId"));
            for payload in payloads(body) {
                let Ok(data) = BASE64.decode(payload.text) else {
                    continue;
                };
                let Some(header) = FragmentHeader::parse(&data) else {
                    continue;
                };
                if !header.start || data.len() < HEADER_LEN + Message::HEADER_LEN {
                    continue;
                }
                let Ok(msg) = Message::decode(data[HEADER_LEN..].to_vec()) else {
                    continue;
                };
                let mut relate = |what: &'static str, id: uuid::Uuid, wsman: Option<&str>| {
                    let Some(wsman) = wsman.and_then(|s| uuid::Uuid::parse_str(s).ok()) else {
                        return;
                    };
                    let order = if id == wsman {
                        ".NET"
                    } else if uuid::Uuid::from_bytes(id.to_bytes_le()) == wsman {
                        "RFC"
                    } else {
                        "unrelated"
                    };
                    *out.entry((what, order)).or_default() += 1;
                };
                relate("RPID/ShellId", msg.runspace_pool_id, shell);
                if let Some(pid) = msg.pipeline_id {
                    relate("PID/CommandId", pid, payload.command_id);
                }
            }
        }
    }
    out
}
