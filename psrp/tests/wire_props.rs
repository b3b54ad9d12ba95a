//! Property tests of the wire layers: messages, fragments and the out-of-process framing round-trip,
//! and malformed input of any shape is an error, never a panic.

use bytes::Bytes;
use proptest::prelude::*;
use psrp::fragment::{Defragmenter, DefragmenterLimits, FragmentHeader, Fragmenter, HEADER_LEN};
use psrp::message::{Bom, Destination, Message, MessageType, UTF8_BOM};
use psrp::transport::outofproc::{Packet, PacketKind, PacketReader, Stream};
use uuid::Uuid;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        proptest::sample::select(MessageType::ALL.to_vec()),
        any::<u32>().prop_map(MessageType::from_code),
    ]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![Just(Destination::Client), Just(Destination::Server)],
        message_type(),
        uuid(),
        proptest::option::of(uuid()),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(destination, message_type, rpid, pid, data)| {
            Message::new(destination, message_type, rpid, pid, data)
        })
}

/// Splits `bytes` into chunks at the given cut points (taken modulo the length).
fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

fn drain(defrag: &mut Defragmenter, out: &mut Vec<Bytes>) {
    while let Some(message) = defrag.next_message().expect("valid fragments") {
        out.push(message);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trip(msg in message()) {
        let wire = msg.encode();
        prop_assert_eq!(wire.len(), msg.encoded_len(Bom::Write));
        prop_assert_eq!(&wire[40..43], UTF8_BOM);
        prop_assert_eq!(Message::decode(wire).unwrap(), msg.clone());
        if !msg.data.starts_with(UTF8_BOM) {
            let wire = msg.encode_with(Bom::Omit);
            prop_assert_eq!(Message::decode(wire.clone()).unwrap().encode_with(Bom::Omit), wire);
        }
    }

    /// Several messages, fragmented at a random size, their fragments interleaved at random (each
    /// object's own order kept), the bytes cut at random: the same messages come out.
    #[test]
    fn fragment_defragment_is_identity(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..6),
        max_fragment_size in (HEADER_LEN + 1)..200usize,
        picks in proptest::collection::vec(any::<usize>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut fragmenter = Fragmenter::with_max_fragment_size(max_fragment_size).unwrap();
        let mut queues: Vec<std::collections::VecDeque<Bytes>> =
            messages.iter().map(|m| fragmenter.fragment(m).into()).collect();
        for queue in &queues {
            prop_assert!(queue.iter().all(|f| f.len() <= max_fragment_size));
        }
        let mut wire = Vec::new();
        let mut picks = picks.into_iter();
        while queues.iter().any(|q| !q.is_empty()) {
            let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
            let i = live[picks.next().unwrap_or(0) % live.len()];
            wire.extend_from_slice(&queues[i].pop_front().unwrap());
        }
        let mut defrag = Defragmenter::new();
        let mut out = Vec::new();
        for chunk in chunked(&wire, &cuts) {
            defrag.feed(&chunk);
            drain(&mut defrag, &mut out);
        }
        defrag.finish().unwrap();
        // Messages come out in the order their last fragments went in.
        let mut expected: Vec<Bytes> = messages.into_iter().map(Bytes::from).collect();
        expected.sort();
        out.sort();
        prop_assert_eq!(out, expected);
    }

    /// pack(): packets hold whole fragments, never exceed the packet size, and join back in order.
    #[test]
    fn pack_defragment_is_identity(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..6),
        max_fragment_size in (HEADER_LEN + 1)..300usize,
        max_packet_size in (HEADER_LEN + 1)..300usize,
    ) {
        let mut fragmenter = Fragmenter::with_max_fragment_size(max_fragment_size).unwrap();
        let packets = fragmenter.pack(messages.iter().map(Vec::as_slice), max_packet_size).unwrap();
        let mut defrag = Defragmenter::new();
        let mut out = Vec::new();
        for packet in &packets {
            prop_assert!(packet.len() <= max_packet_size);
            prop_assert!(!packet.is_empty());
            // Whole fragments only, none over the fragment size.
            let mut rest = &packet[..];
            while !rest.is_empty() {
                let header = FragmentHeader::parse(rest).unwrap();
                let len = HEADER_LEN + header.blob_len as usize;
                prop_assert!(len <= max_fragment_size && len <= rest.len());
                rest = &rest[len..];
            }
            defrag.feed(packet);
            drain(&mut defrag, &mut out);
        }
        defrag.finish().unwrap();
        prop_assert_eq!(out, messages.into_iter().map(Bytes::from).collect::<Vec<_>>());
    }

    /// Whole PSRP messages through fragments and the framing and back.
    #[test]
    fn messages_through_the_framing(
        msgs in proptest::collection::vec(message(), 1..5),
        pipeline in proptest::option::of(uuid()),
        max_fragment_size in (HEADER_LEN + 1)..500usize,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut fragmenter = Fragmenter::with_max_fragment_size(max_fragment_size).unwrap();
        let mut wire = Vec::new();
        for msg in &msgs {
            for fragment in fragmenter.fragment(&msg.encode()) {
                Packet::data(Stream::Default, pipeline, fragment).encode_into(&mut wire);
            }
            Packet::DataAck { pipeline_id: pipeline.filter(|p| !p.is_nil()) }.encode_into(&mut wire);
        }
        let mut reader = PacketReader::new();
        let mut defrag = Defragmenter::new();
        let mut out = Vec::new();
        let mut acks = 0;
        for chunk in chunked(&wire, &cuts) {
            reader.feed(&chunk);
            while let Some(packet) = reader.next_packet().unwrap() {
                prop_assert_eq!(packet.pipeline_id(), pipeline.filter(|p| !p.is_nil()));
                match packet {
                    Packet::Data { data, .. } => {
                        defrag.feed(&data);
                        let mut done = Vec::new();
                        drain(&mut defrag, &mut done);
                        out.extend(done.into_iter().map(|m| Message::decode(m).unwrap()));
                    }
                    Packet::DataAck { .. } => acks += 1,
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
        prop_assert_eq!(acks, msgs.len());
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn packet_round_trip(
        kind in proptest::sample::select(PacketKind::ALL.to_vec()),
        pipeline in proptest::option::of(uuid()),
        prompt in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 1..200),
    ) {
        let packet = match kind {
            PacketKind::Data => {
                let stream = if prompt { Stream::PromptResponse } else { Stream::Default };
                Packet::data(stream, pipeline, data)
            }
            kind => Packet::control(kind, pipeline).unwrap(),
        };
        let line = packet.encode();
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(Packet::parse_line(&line[..line.len() - 1]).unwrap(), packet);
    }

    /// Arbitrary bytes: errors or messages, never a panic, and the limits hold.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(bytes.clone());
        let limits = DefragmenterLimits { max_message_size: 256, max_partial_objects: 4 };
        let mut defrag = Defragmenter::with_limits(limits);
        defrag.feed(&bytes);
        while let Ok(Some(message)) = defrag.next_message() {
            prop_assert!(message.len() <= 256);
            let _ = Message::decode(message);
        }
        prop_assert!(defrag.partial_objects() <= 4);
        let _ = defrag.finish();
        let mut reader = PacketReader::with_max_line_len(300);
        reader.feed(&bytes);
        while let Ok(Some(_)) = reader.next_packet() {}
        let _ = Packet::parse_line(&bytes);
    }

    /// Valid streams with a few bytes changed: still no panic.
    #[test]
    fn mutated_streams_never_panic(
        msgs in proptest::collection::vec(message(), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        max_fragment_size in (HEADER_LEN + 1)..120usize,
    ) {
        let mut fragmenter = Fragmenter::with_max_fragment_size(max_fragment_size).unwrap();
        let mut frags = Vec::new();
        let mut lines = Vec::new();
        for msg in &msgs {
            let encoded = msg.encode();
            fragmenter.fragment_into(&encoded, &mut frags);
            Packet::data(Stream::Default, None, encoded).encode_into(&mut lines);
        }
        for (at, byte) in &flips {
            let i = at % frags.len();
            frags[i] ^= byte;
            let j = at % lines.len();
            lines[j] ^= byte;
        }
        let mut defrag = Defragmenter::new();
        defrag.feed(&frags);
        while let Ok(Some(message)) = defrag.next_message() {
            let _ = Message::decode(message);
        }
        let mut reader = PacketReader::new();
        reader.feed(&lines);
        while let Ok(Some(_)) = reader.next_packet() {}
    }
}
