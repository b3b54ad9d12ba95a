//! Arbitrary bytes as what a peer writes on the out-of-process channel, cut into chunks of a size the
//! input picks: the packet reader returns errors, never panics; every packet it accepts encodes to a
//! line that parses back to the same packet; Data packets go on through the defragmenter (one per
//! PSGuid and stream, as a client keeps them) and the message decoder.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use psrp::fragment::{Defragmenter, DefragmenterLimits};
use psrp::message::Message;
use psrp::transport::outofproc::{Packet, PacketReader};

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, stream)) = input.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        stream.len().max(1)
    } else {
        usize::from(chunk)
    };
    let _ = Packet::parse_line(stream);
    let mut reader = PacketReader::with_max_line_len(1 << 17);
    let mut streams = HashMap::new();
    for piece in stream.chunks(chunk) {
        reader.feed(piece);
        loop {
            match reader.next_packet() {
                Ok(Some(packet)) => handle(packet, &mut streams),
                Ok(None) => break,
                Err(_) => {
                    assert!(reader.next_packet().is_err(), "errors are sticky");
                    return;
                }
            }
        }
    }
});

fn handle(packet: Packet, streams: &mut HashMap<(Option<uuid::Uuid>, bool), Defragmenter>) {
    let line = packet.encode();
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(Packet::parse_line(&line[..line.len() - 1]).as_ref(), Ok(&packet));
    if let Packet::Data {
        stream,
        pipeline_id,
        data,
    } = packet
    {
        let limits = DefragmenterLimits {
            max_message_size: 1 << 20,
            max_partial_objects: 8,
        };
        let key = (
            pipeline_id,
            stream == psrp::transport::outofproc::Stream::PromptResponse,
        );
        let defrag = streams
            .entry(key)
            .or_insert_with(|| Defragmenter::with_limits(limits));
        defrag.feed(&data);
        while let Ok(Some(message)) = defrag.next_message() {
            if let Ok(message) = Message::decode(message) {
                let _ = message.xml();
            }
        }
    }
}
