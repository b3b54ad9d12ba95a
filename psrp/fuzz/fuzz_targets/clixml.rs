//! Arbitrary UTF-8 to the CLIXML deserializer: an error or a value, never a panic; a value renders as
//! JSON and text, serializes, parses back, and serializing that gives the same text again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use psrp::clixml;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(value) = clixml::parse(text) else { return };
    let _ = clixml::to_json(&value);
    let _ = clixml::to_text(&value);
    let written = clixml::to_clixml(&value);
    let again = clixml::parse(&written).unwrap_or_else(|e| panic!("own output refused: {e}\n{written}"));
    assert_eq!(
        clixml::to_clixml(&again),
        written,
        "serialization is not a fixed point"
    );
});
