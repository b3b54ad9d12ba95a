//! Arbitrary bytes as a fragment stream, cut into chunks of a size the input picks: the defragmenter
//! and the message decoder return errors, never panic, keep their limits, and what they accept
//! survives a round trip (re-encoded, re-fragmented and joined again, byte for byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use psrp::fragment::{Defragmenter, DefragmenterLimits, Fragmenter};
use psrp::message::{Bom, Message, UTF8_BOM};

const LIMITS: DefragmenterLimits = DefragmenterLimits {
    max_message_size: 1 << 20,
    max_partial_objects: 8,
};

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, stream)) = input.split_first() else {
        return;
    };
    let chunk = if chunk == 0 {
        stream.len().max(1)
    } else {
        usize::from(chunk)
    };
    let mut defrag = Defragmenter::with_limits(LIMITS);
    for piece in stream.chunks(chunk) {
        defrag.feed(piece);
        loop {
            match defrag.next_message() {
                Ok(Some(bytes)) => check(&bytes),
                Ok(None) => break,
                Err(_) => {
                    assert!(defrag.next_message().is_err(), "errors are sticky");
                    return;
                }
            }
        }
        assert!(defrag.partial_objects() <= LIMITS.max_partial_objects);
    }
    let _ = defrag.finish();
});

fn check(bytes: &[u8]) {
    assert!(bytes.len() <= LIMITS.max_message_size);
    // Joined again after fragmenting at a size taken from the message: the same bytes.
    let size = 22 + bytes.len() % 97;
    let mut fragmenter = Fragmenter::with_max_fragment_size(size).expect("size above the header");
    let mut again = Defragmenter::new();
    for fragment in fragmenter.fragment(bytes) {
        assert!(fragment.len() <= size);
        again.feed(&fragment);
    }
    assert_eq!(
        again.next_message().expect("own fragments join").as_deref(),
        Some(bytes)
    );
    again.finish().expect("nothing left over");

    if let Ok(message) = Message::decode(bytes.to_vec()) {
        let _ = message.xml();
        let _ = message.message_type.to_string();
        let bom = if bytes[Message::HEADER_LEN..].starts_with(UTF8_BOM) {
            Bom::Write
        } else {
            Bom::Omit
        };
        // A nil pipeline id decodes to None and encodes back to nil; a second BOM stays in the data.
        if bom == Bom::Write || !message.data.starts_with(UTF8_BOM) {
            assert_eq!(message.encode_with(bom), bytes);
        }
    }
}
