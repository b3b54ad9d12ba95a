//! PSRP fragments (MS-PSRP 2.2.4): splitting messages to the negotiated blob size and joining them.
//!
//! ```text
//! ObjectId (u64 BE) | FragmentId (u64 BE) | flags (u8: S=0x1 E=0x2) | BlobLength (u32 BE) | Blob
//! ```
//!
//! Every message (one "object") is cut into fragments numbered from 0; the first carries S, the last E
//! (a message that fits in one fragment carries both). Sizes here are whole fragments, header included,
//! as PowerShell counts them (`Fragmentor.FragmentSize`, 32 KiB for the out-of-process transport; over
//! WS-Management it follows the negotiated envelope size).
//!
//! [`Fragmenter`] numbers objects per instance, from 1 as PowerShell does. [`Defragmenter`] takes bytes
//! in any split (a fragment may span packets, objects may interleave) and yields whole messages, within
//! [`DefragmenterLimits`]. Keep one `Defragmenter` per byte stream: when a transport splits fragments
//! across packets, two streams (say the pool's and a pipeline's) must not share one.

use bytes::{Buf, Bytes, BytesMut};

/// Length of a fragment's header.
pub const HEADER_LEN: usize = 21;

/// PowerShell's fragment size for the out-of-process transport (`BaseTransportManager.DefaultFragmentSize`).
pub const DEFAULT_MAX_FRAGMENT_SIZE: usize = 32 * 1024;

/// The largest fragment size accepted: PowerShell keeps `BlobLength` non-negative in an `int`.
pub const MAX_FRAGMENT_SIZE_LIMIT: usize = HEADER_LEN + i32::MAX as usize;

const START_FLAG: u8 = 0x1;
const END_FLAG: u8 = 0x2;

/// The fixed part of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentHeader {
    pub object_id: u64,
    pub fragment_id: u64,
    /// S: the first fragment of its object.
    pub start: bool,
    /// E: the last fragment of its object.
    pub end: bool,
    pub blob_len: u32,
}

impl FragmentHeader {
    /// Reads a header from the front of `bytes`; `None` when fewer than [`HEADER_LEN`] bytes are there.
    /// Reserved flag bits are ignored, as the specification asks of a receiver.
    pub fn parse(bytes: &[u8]) -> Option<FragmentHeader> {
        let header: &[u8; HEADER_LEN] = bytes.first_chunk()?;
        let mut buf = &header[..];
        let object_id = buf.get_u64();
        let fragment_id = buf.get_u64();
        let flags = buf.get_u8();
        let blob_len = buf.get_u32();
        Some(FragmentHeader {
            object_id,
            fragment_id,
            start: flags & START_FLAG != 0,
            end: flags & END_FLAG != 0,
            blob_len,
        })
    }

    /// The header's wire form (reserved flag bits zero).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[0..8].copy_from_slice(&self.object_id.to_be_bytes());
        out[8..16].copy_from_slice(&self.fragment_id.to_be_bytes());
        out[16] = if self.start { START_FLAG } else { 0 } | if self.end { END_FLAG } else { 0 };
        out[17..21].copy_from_slice(&self.blob_len.to_be_bytes());
        out
    }
}

/// A fragment size the fragmenter cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error(
        "fragment size {size} is outside {min}..={MAX_FRAGMENT_SIZE_LIMIT} (the {HEADER_LEN}-byte header plus at least one byte)",
        min = HEADER_LEN + 1
    )]
    BadFragmentSize { size: usize },
    #[error("packet size {size} leaves no room for a fragment (at least {min} bytes)", min = HEADER_LEN + 1)]
    BadPacketSize { size: usize },
}

fn check_fragment_size(size: usize) -> Result<usize, FragmentError> {
    if (HEADER_LEN + 1..=MAX_FRAGMENT_SIZE_LIMIT).contains(&size) {
        Ok(size)
    } else {
        Err(FragmentError::BadFragmentSize { size })
    }
}

/// Cuts encoded messages into fragments of at most [`max_fragment_size`](Fragmenter::max_fragment_size)
/// bytes, giving each message the next object id.
#[derive(Debug, Clone)]
pub struct Fragmenter {
    max_fragment_size: usize,
    next_object_id: u64,
}

impl Default for Fragmenter {
    fn default() -> Self {
        Fragmenter::new()
    }
}

impl Fragmenter {
    /// A fragmenter with PowerShell's default fragment size, numbering objects from 1.
    pub fn new() -> Fragmenter {
        Fragmenter {
            max_fragment_size: DEFAULT_MAX_FRAGMENT_SIZE,
            next_object_id: 1,
        }
    }

    /// A fragmenter whose fragments (header included) are at most `size` bytes.
    pub fn with_max_fragment_size(size: usize) -> Result<Fragmenter, FragmentError> {
        Ok(Fragmenter {
            max_fragment_size: check_fragment_size(size)?,
            next_object_id: 1,
        })
    }

    /// Changes the fragment size, as after a negotiation; object ids go on.
    pub fn set_max_fragment_size(&mut self, size: usize) -> Result<(), FragmentError> {
        self.max_fragment_size = check_fragment_size(size)?;
        Ok(())
    }

    pub fn max_fragment_size(&self) -> usize {
        self.max_fragment_size
    }

    /// The largest blob one fragment carries.
    pub fn max_blob_size(&self) -> usize {
        self.max_fragment_size - HEADER_LEN
    }

    /// The object id the next message gets.
    pub fn next_object_id(&self) -> u64 {
        self.next_object_id
    }

    /// Sets the object id the next message gets (ids then increase by one per message).
    pub fn set_next_object_id(&mut self, object_id: u64) {
        self.next_object_id = object_id;
    }

    fn take_object_id(&mut self) -> u64 {
        let id = self.next_object_id;
        self.next_object_id = self.next_object_id.wrapping_add(1);
        id
    }

    /// Fragments one encoded message; each element of the result is one whole fragment.
    pub fn fragment(&mut self, message: &[u8]) -> Vec<Bytes> {
        let object_id = self.take_object_id();
        let max_blob = self.max_blob_size();
        let count = message.len().div_ceil(max_blob).max(1);
        let mut out = Vec::with_capacity(count);
        let mut fragment_id = 0u64;
        let mut rest = message;
        loop {
            let (blob, tail) = rest.split_at(rest.len().min(max_blob));
            let mut buf = Vec::with_capacity(HEADER_LEN + blob.len());
            write_fragment(&mut buf, object_id, fragment_id, blob, tail.is_empty());
            out.push(Bytes::from(buf));
            if tail.is_empty() {
                return out;
            }
            rest = tail;
            fragment_id += 1;
        }
    }

    /// Fragments one encoded message, appending its fragments back to back to `out`.
    pub fn fragment_into(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let object_id = self.take_object_id();
        let max_blob = self.max_blob_size();
        out.reserve(message.len() + HEADER_LEN * message.len().div_ceil(max_blob).max(1));
        let mut fragment_id = 0u64;
        let mut rest = message;
        loop {
            let (blob, tail) = rest.split_at(rest.len().min(max_blob));
            write_fragment(out, object_id, fragment_id, blob, tail.is_empty());
            if tail.is_empty() {
                return;
            }
            rest = tail;
            fragment_id += 1;
        }
    }

    /// Fragments several encoded messages into packets of at most `max_packet_size` bytes, each holding
    /// whole fragments: a message starts in the room left by the one before and goes on in the next
    /// packets (what one WS-Management Send or one out-of-process Data packet can carry).
    pub fn pack<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m [u8]>,
        max_packet_size: usize,
    ) -> Result<Vec<Vec<u8>>, FragmentError> {
        if max_packet_size <= HEADER_LEN {
            return Err(FragmentError::BadPacketSize {
                size: max_packet_size,
            });
        }
        let max_blob = self.max_blob_size();
        let mut packets = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        for message in messages {
            let object_id = self.take_object_id();
            let mut fragment_id = 0u64;
            let mut rest = message;
            loop {
                let mut room = max_packet_size - current.len();
                // A fragment needs its header and one byte of blob (or none, for an empty message).
                if room < HEADER_LEN + usize::from(!rest.is_empty()) {
                    packets.push(std::mem::take(&mut current));
                    room = max_packet_size;
                }
                let take = rest.len().min(max_blob).min(room - HEADER_LEN);
                let (blob, tail) = rest.split_at(take);
                write_fragment(&mut current, object_id, fragment_id, blob, tail.is_empty());
                if tail.is_empty() {
                    break;
                }
                rest = tail;
                fragment_id += 1;
            }
        }
        if !current.is_empty() {
            packets.push(current);
        }
        Ok(packets)
    }
}

fn write_fragment(out: &mut Vec<u8>, object_id: u64, fragment_id: u64, blob: &[u8], end: bool) {
    let header = FragmentHeader {
        object_id,
        fragment_id,
        start: fragment_id == 0,
        end,
        // Fragment sizes are capped at MAX_FRAGMENT_SIZE_LIMIT, so a blob always fits.
        blob_len: u32::try_from(blob.len()).unwrap_or(u32::MAX),
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(blob);
}

/// Bounds on what a [`Defragmenter`] holds for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragmenterLimits {
    /// The largest message (all fragments of one object). PowerShell's client allows 200 MiB by
    /// default (`PSSessionOption.MaximumReceivedObjectSize`).
    pub max_message_size: usize,
    /// How many objects may be started and not finished at once.
    pub max_partial_objects: usize,
}

impl Default for DefragmenterLimits {
    fn default() -> Self {
        DefragmenterLimits {
            max_message_size: 200 << 20,
            max_partial_objects: 64,
        }
    }
}

/// Fragments that do not join into messages. The stream is out of step after one: a [`Defragmenter`]
/// that returned an error returns it again on every later call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefragmentError {
    #[error("fragment {fragment_id} of object {object_id} arrived without the object's start fragment")]
    MissingStart { object_id: u64, fragment_id: u64 },
    #[error("object {object_id} started again before it ended")]
    DuplicateStart { object_id: u64 },
    #[error("fragment {got} of object {object_id} out of sequence (expected {expected})")]
    OutOfOrder { object_id: u64, expected: u64, got: u64 },
    #[error("object {object_id} grows to {size} bytes, over the {limit}-byte message limit")]
    MessageTooLarge { object_id: u64, size: u64, limit: usize },
    #[error("more than {limit} objects started and not finished")]
    TooManyPartialObjects { limit: usize },
    #[error(
        "stream ended in the middle: {buffered} bytes of an unfinished fragment, {partial_objects} unfinished objects"
    )]
    Truncated { buffered: usize, partial_objects: usize },
}

#[derive(Debug)]
struct Partial {
    object_id: u64,
    next_fragment_id: u64,
    data: Vec<u8>,
}

/// Joins fragments back into messages.
///
/// Feed it bytes as they arrive with [`feed`](Defragmenter::feed), then call
/// [`next_message`](Defragmenter::next_message) until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct Defragmenter {
    limits: DefragmenterLimits,
    buf: BytesMut,
    partial: Vec<Partial>,
    failed: Option<DefragmentError>,
}

impl Defragmenter {
    pub fn new() -> Defragmenter {
        Defragmenter::default()
    }

    pub fn with_limits(limits: DefragmenterLimits) -> Defragmenter {
        Defragmenter {
            limits,
            ..Defragmenter::default()
        }
    }

    pub fn limits(&self) -> DefragmenterLimits {
        self.limits
    }

    /// Adds bytes received from the peer.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next whole message, `Ok(None)` when the bytes fed so far hold no further one.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, DefragmentError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.step() {
            Ok(message) => Ok(message),
            Err(err) => {
                self.buf = BytesMut::new();
                self.partial = Vec::new();
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    fn step(&mut self) -> Result<Option<Bytes>, DefragmentError> {
        loop {
            let Some(header) = FragmentHeader::parse(&self.buf) else {
                return Ok(None);
            };
            // Check what the header alone tells before waiting for (and buffering) the blob.
            let slot = self.check(&header)?;
            let blob_len = header.blob_len as usize;
            // No reserving for the announced length: memory grows with what actually arrives.
            if self.buf.len() - HEADER_LEN < blob_len {
                return Ok(None);
            }
            self.buf.advance(HEADER_LEN);
            let blob = self.buf.split_to(blob_len);
            match slot {
                None if header.end => return Ok(Some(blob.freeze())),
                None => {
                    if self.partial.len() >= self.limits.max_partial_objects {
                        return Err(DefragmentError::TooManyPartialObjects {
                            limit: self.limits.max_partial_objects,
                        });
                    }
                    self.partial.push(Partial {
                        object_id: header.object_id,
                        next_fragment_id: 1,
                        data: blob.to_vec(),
                    });
                }
                Some(index) => {
                    let partial = &mut self.partial[index];
                    partial.data.extend_from_slice(&blob);
                    partial.next_fragment_id += 1;
                    if header.end {
                        let done = self.partial.swap_remove(index);
                        return Ok(Some(Bytes::from(done.data)));
                    }
                }
            }
        }
    }

    /// Validates a fragment header against the objects in flight; returns the index of the object it
    /// continues, or `None` for a start fragment.
    fn check(&self, header: &FragmentHeader) -> Result<Option<usize>, DefragmentError> {
        let index = self.partial.iter().position(|p| p.object_id == header.object_id);
        let held = index.map_or(0, |i| self.partial[i].data.len() as u64);
        let size = held + u64::from(header.blob_len);
        if size > self.limits.max_message_size as u64 {
            return Err(DefragmentError::MessageTooLarge {
                object_id: header.object_id,
                size,
                limit: self.limits.max_message_size,
            });
        }
        match (header.start, index) {
            (true, Some(_)) => Err(DefragmentError::DuplicateStart {
                object_id: header.object_id,
            }),
            (true, None) if header.fragment_id != 0 => Err(DefragmentError::OutOfOrder {
                object_id: header.object_id,
                expected: 0,
                got: header.fragment_id,
            }),
            (true, None) => Ok(None),
            (false, None) => Err(DefragmentError::MissingStart {
                object_id: header.object_id,
                fragment_id: header.fragment_id,
            }),
            (false, Some(i)) => {
                let expected = self.partial[i].next_fragment_id;
                if header.fragment_id == expected {
                    Ok(Some(i))
                } else {
                    Err(DefragmentError::OutOfOrder {
                        object_id: header.object_id,
                        expected,
                        got: header.fragment_id,
                    })
                }
            }
        }
    }

    /// Whether nothing is pending: no bytes of an unfinished fragment and no unfinished object.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.partial.is_empty()
    }

    /// Objects started and not yet finished.
    pub fn partial_objects(&self) -> usize {
        self.partial.len()
    }

    /// Bytes fed and not yet taken into a fragment.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// For the end of a stream: an error if it stopped inside a fragment or an object.
    pub fn finish(&self) -> Result<(), DefragmentError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.is_idle() {
            Ok(())
        } else {
            Err(DefragmentError::Truncated {
                buffered: self.buf.len(),
                partial_objects: self.partial.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(defrag: &mut Defragmenter) -> Result<Vec<Bytes>, DefragmentError> {
        let mut out = Vec::new();
        while let Some(message) = defrag.next_message()? {
            out.push(message);
        }
        Ok(out)
    }

    fn frag(object_id: u64, fragment_id: u64, start: bool, end: bool, blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = FragmentHeader {
            object_id,
            fragment_id,
            start,
            end,
            blob_len: blob.len() as u32,
        };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(blob);
        out
    }

    #[test]
    fn header_layout_is_big_endian() {
        let header = FragmentHeader {
            object_id: 1,
            fragment_id: 2,
            start: true,
            end: false,
            blob_len: 0x0102,
        };
        let wire = header.encode();
        assert_eq!(
            wire,
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 1, 2]
        );
        assert_eq!(FragmentHeader::parse(&wire), Some(header));
        assert_eq!(FragmentHeader::parse(&wire[..20]), None);
        // Reserved bits are ignored on receipt.
        let mut reserved = wire;
        reserved[16] = 0xF8 | 0x2;
        let parsed = FragmentHeader::parse(&reserved).unwrap();
        assert!(!parsed.start && parsed.end);
    }

    #[test]
    fn splits_at_the_blob_size_as_powershell_does() {
        // PowerShell: 32 KiB fragments carry 32747-byte blobs (seen in pypsrp's recorded exchanges).
        let mut fragmenter = Fragmenter::new();
        assert_eq!(fragmenter.max_blob_size(), 32_747);
        let message = vec![7u8; 32_747 * 2 + 5];
        let fragments = fragmenter.fragment(&message);
        assert_eq!(fragments.len(), 3);
        let headers: Vec<_> = fragments
            .iter()
            .map(|f| FragmentHeader::parse(f).unwrap())
            .collect();
        assert_eq!(
            headers[0],
            FragmentHeader {
                object_id: 1,
                fragment_id: 0,
                start: true,
                end: false,
                blob_len: 32_747
            }
        );
        assert_eq!(
            headers[1],
            FragmentHeader {
                object_id: 1,
                fragment_id: 1,
                start: false,
                end: false,
                blob_len: 32_747
            }
        );
        assert_eq!(
            headers[2],
            FragmentHeader {
                object_id: 1,
                fragment_id: 2,
                start: false,
                end: true,
                blob_len: 5
            }
        );
        assert!(fragments.iter().all(|f| f.len() <= DEFAULT_MAX_FRAGMENT_SIZE));
        // Exactly one blob: one fragment with both flags; object ids go up by one.
        let one = fragmenter.fragment(&message[..32_747]);
        assert_eq!(one.len(), 1);
        let header = FragmentHeader::parse(&one[0]).unwrap();
        assert!(header.start && header.end);
        assert_eq!(header.object_id, 2);
        let mut joined = Vec::new();
        fragmenter.fragment_into(&message, &mut joined);
        assert_eq!(joined.len(), message.len() + 3 * HEADER_LEN);
        assert_eq!(fragmenter.next_object_id(), 4);
    }

    #[test]
    fn empty_message_is_one_fragment() {
        let mut fragmenter = Fragmenter::new();
        let fragments = fragmenter.fragment(b"");
        assert_eq!(fragments.len(), 1);
        assert_eq!(fragments[0].len(), HEADER_LEN);
        let mut defrag = Defragmenter::new();
        defrag.feed(&fragments[0]);
        assert_eq!(collect(&mut defrag).unwrap(), vec![Bytes::new()]);
    }

    #[test]
    fn fragment_sizes_are_checked() {
        assert_eq!(
            Fragmenter::with_max_fragment_size(21).unwrap_err(),
            FragmentError::BadFragmentSize { size: 21 }
        );
        assert!(Fragmenter::with_max_fragment_size(22).is_ok());
        let mut fragmenter = Fragmenter::new();
        assert!(
            fragmenter
                .set_max_fragment_size(MAX_FRAGMENT_SIZE_LIMIT + 1)
                .is_err()
        );
        assert_eq!(fragmenter.max_fragment_size(), DEFAULT_MAX_FRAGMENT_SIZE);
        assert_eq!(
            fragmenter.pack([&b"x"[..]], 21).unwrap_err(),
            FragmentError::BadPacketSize { size: 21 }
        );
    }

    #[test]
    fn pack_fills_packets_with_whole_fragments() {
        let mut fragmenter = Fragmenter::with_max_fragment_size(100).unwrap();
        let a = vec![1u8; 30];
        let b = vec![2u8; 150];
        let c = vec![3u8; 10];
        let packets = fragmenter.pack([&a[..], &b[..], &c[..]], 120).unwrap();
        // a: 51 bytes; b starts in the 69 bytes left (48-byte blob), then a 79-byte blob (fragment
        // size 100), then 23; c follows.
        let sizes: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![120, 100, 44 + 31]);
        let mut defrag = Defragmenter::new();
        for packet in &packets {
            assert!(packet.len() <= 120);
            defrag.feed(packet);
        }
        assert_eq!(
            collect(&mut defrag).unwrap(),
            vec![Bytes::from(a), Bytes::from(b), Bytes::from(c)]
        );
        defrag.finish().unwrap();
    }

    #[test]
    fn pack_starts_a_new_packet_when_no_blob_fits() {
        let mut fragmenter = Fragmenter::new();
        let packets = fragmenter.pack([&[1u8; 10][..], &[2u8; 10][..]], 40).unwrap();
        // 31 bytes used, 9 left: less than a header, so the second message opens a new packet.
        assert_eq!(packets.iter().map(Vec::len).collect::<Vec<_>>(), vec![31, 31]);
    }

    #[test]
    fn joins_interleaved_objects_in_any_split() {
        let mut wire = Vec::new();
        wire.extend(frag(5, 0, true, false, b"hel"));
        wire.extend(frag(6, 0, true, false, b"wor"));
        wire.extend(frag(7, 0, true, true, b"!"));
        wire.extend(frag(6, 1, false, true, b"ld"));
        wire.extend(frag(5, 1, false, false, b"l"));
        wire.extend(frag(5, 2, false, true, b"o"));
        for split in 1..wire.len() {
            let mut defrag = Defragmenter::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                defrag.feed(chunk);
                out.extend(collect(&mut defrag).unwrap());
            }
            assert_eq!(out, vec![&b"!"[..], b"world", b"hello"]);
            assert!(defrag.is_idle());
        }
    }

    #[test]
    fn sequence_errors() {
        let cases: Vec<(Vec<u8>, DefragmentError)> = vec![
            (
                frag(1, 1, false, true, b"x"),
                DefragmentError::MissingStart {
                    object_id: 1,
                    fragment_id: 1,
                },
            ),
            (
                [frag(1, 0, true, false, b"x"), frag(1, 0, true, false, b"x")].concat(),
                DefragmentError::DuplicateStart { object_id: 1 },
            ),
            (
                [frag(1, 0, true, false, b"x"), frag(1, 2, false, true, b"x")].concat(),
                DefragmentError::OutOfOrder {
                    object_id: 1,
                    expected: 1,
                    got: 2,
                },
            ),
            (
                frag(1, 3, true, true, b"x"),
                DefragmentError::OutOfOrder {
                    object_id: 1,
                    expected: 0,
                    got: 3,
                },
            ),
        ];
        for (wire, expected) in cases {
            let mut defrag = Defragmenter::new();
            defrag.feed(&wire);
            assert_eq!(collect(&mut defrag), Err(expected.clone()));
            // Sticky: the stream is out of step.
            defrag.feed(&frag(9, 0, true, true, b"y"));
            assert_eq!(defrag.next_message(), Err(expected.clone()));
            assert_eq!(defrag.finish(), Err(expected));
        }
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let limits = DefragmenterLimits {
            max_message_size: 10,
            max_partial_objects: 2,
        };
        let mut defrag = Defragmenter::with_limits(limits);
        // Only the header of an oversized fragment is needed to refuse it.
        defrag.feed(&frag(1, 0, true, true, &[0; 11])[..HEADER_LEN]);
        assert_eq!(
            defrag.next_message(),
            Err(DefragmentError::MessageTooLarge {
                object_id: 1,
                size: 11,
                limit: 10
            })
        );
        let mut defrag = Defragmenter::with_limits(limits);
        defrag.feed(&[frag(1, 0, true, false, &[0; 6]), frag(1, 1, false, true, &[0; 5])].concat());
        assert_eq!(
            collect(&mut defrag),
            Err(DefragmentError::MessageTooLarge {
                object_id: 1,
                size: 11,
                limit: 10
            })
        );
        let mut defrag = Defragmenter::with_limits(limits);
        defrag.feed(
            &[
                frag(1, 0, true, false, b"a"),
                frag(2, 0, true, false, b"b"),
                frag(3, 0, true, false, b"c"),
            ]
            .concat(),
        );
        assert_eq!(
            collect(&mut defrag),
            Err(DefragmentError::TooManyPartialObjects { limit: 2 })
        );
    }

    #[test]
    fn finish_reports_truncation() {
        let mut defrag = Defragmenter::new();
        defrag.feed(&frag(1, 0, true, false, b"abc"));
        defrag.feed(&frag(1, 1, false, true, b"de")[..10]);
        assert_eq!(collect(&mut defrag).unwrap(), Vec::<Bytes>::new());
        assert_eq!(defrag.partial_objects(), 1);
        assert_eq!(defrag.buffered_len(), 10);
        assert_eq!(
            defrag.finish(),
            Err(DefragmentError::Truncated {
                buffered: 10,
                partial_objects: 1
            })
        );
    }
}
