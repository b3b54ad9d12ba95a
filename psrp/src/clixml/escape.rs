//! String escaping of CLIXML (MS-PSRP 2.2.5.3.2), on top of ordinary XML escaping.
//!
//! PowerShell's serializer (`InternalSerializer.EncodeString` in PowerShell's `serialization.cs`)
//! writes a UTF-16 code unit as `_xHHHH_` (four upper-case hex digits) when it is
//! - a C0 control character, U+0000 to U+001F (tab, line feed and carriage return included),
//! - a C1 control character or DEL, U+007F to U+009F,
//! - either half of a surrogate pair, U+D800 to U+DFFF: a character outside the BMP becomes two
//!   escapes, `_xD83D__xDE00_` for U+1F600,
//! - a `_` followed by `x` or `X`, so that text which looks like an escape survives: `_x0041_` is
//!   written `_x005F_x0041_`.
//!
//! This module also escapes U+FFFE and U+FFFF, which PowerShell leaves alone but which are not XML
//! characters at all; any reader decodes them the same way.
//!
//! Reading is `XmlConvert.DecodeName`, which PowerShell uses: `_[xX]` followed by four or eight hex
//! digits (either case) and `_` is one UTF-16 code unit (four digits) or one code point (eight). A
//! surrogate half that has no partner cannot be held in a Rust string and becomes U+FFFD.

use std::borrow::Cow;

/// Escapes `s` the way PowerShell's serializer does (see the module documentation); the result is
/// still to be XML-escaped. Most strings need nothing and come back borrowed.
pub fn encode(s: &str) -> Cow<'_, str> {
    if !s
        .char_indices()
        .any(|(i, c)| needs_escape(c, s.as_bytes().get(i + 1).copied()))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    push_encoded(&mut out, s, XmlContext::None);
    Cow::Owned(out)
}

/// Undoes [`encode`] (and the rest of what `XmlConvert.DecodeName` accepts). Text without `_` comes
/// back borrowed.
pub fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('_') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut pending_high: Option<u16> = None;
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_'
            && let Some((unit, len)) = escape_at(bytes, i)
        {
            if literal_start < i {
                flush_high(&mut out, &mut pending_high);
                out.push_str(&s[literal_start..i]);
            }
            match unit {
                Escaped::Unit(u) => push_unit(&mut out, &mut pending_high, u),
                Escaped::Char(c) => {
                    flush_high(&mut out, &mut pending_high);
                    out.push(c);
                }
            }
            i += len;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    if literal_start < bytes.len() {
        flush_high(&mut out, &mut pending_high);
        out.push_str(&s[literal_start..]);
    }
    flush_high(&mut out, &mut pending_high);
    Cow::Owned(out)
}

/// Where escaped text goes in an XML document, which decides the XML escaping on top.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum XmlContext {
    /// Only the CLIXML `_x` escaping ([`encode`]).
    None,
    /// Element text: also `&`, `<` and `>`.
    Text,
    /// A double-quoted attribute value: also `"`.
    Attribute,
}

/// Appends `s` to `out` with CLIXML escaping and the XML escaping `context` needs, in one pass.
pub(crate) fn push_encoded(out: &mut String, s: &str, context: XmlContext) {
    let bytes = s.as_bytes();
    // Most text is printable ASCII with nothing to escape in any context: one scan, one copy.
    if bytes
        .iter()
        .all(|b| matches!(b, 0x20..=0x7E) && !matches!(b, b'&' | b'<' | b'>' | b'"' | b'_'))
    {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let next = bytes.get(i + c.len_utf8()).copied();
        let xml = match (context, c) {
            (XmlContext::None, _) => None,
            (_, '&') => Some("&amp;"),
            (_, '<') => Some("&lt;"),
            (_, '>') => Some("&gt;"),
            (XmlContext::Attribute, '"') => Some("&quot;"),
            _ => None,
        };
        if xml.is_none() && !needs_escape(c, next) {
            continue;
        }
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        if let Some(entity) = xml {
            out.push_str(entity);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            push_unit_escape(out, *unit);
        }
    }
    out.push_str(&s[start..]);
}

fn push_unit_escape(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push_str("_x");
    for shift in [12u16, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xF)]));
    }
    out.push('_');
}

/// Whether `c` (followed by the byte `next`) is written as `_xHHHH_`.
fn needs_escape(c: char, next: Option<u8>) -> bool {
    matches!(c, '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}' | '\u{FFFE}' | '\u{FFFF}')
        || u32::from(c) > 0xFFFF
        || (c == '_' && matches!(next, Some(b'x' | b'X')))
}

enum Escaped {
    Unit(u16),
    Char(char),
}

/// The escape starting at `bytes[i]` (which is `_`), and its length, if there is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<(Escaped, usize)> {
    if !matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        return None;
    }
    let hex_at = |n: usize| -> Option<u32> {
        let digits = bytes.get(i + 2..i + 2 + n)?;
        if bytes.get(i + 2 + n) != Some(&b'_') {
            return None;
        }
        digits
            .iter()
            .try_fold(0u32, |acc, b| Some(acc * 16 + char::from(*b).to_digit(16)?))
    };
    if let Some(v) = hex_at(4) {
        return Some((Escaped::Unit(u16::try_from(v).ok()?), 7));
    }
    let v = hex_at(8)?;
    if let Ok(unit) = u16::try_from(v) {
        return Some((Escaped::Unit(unit), 11));
    }
    // A code point beyond U+10FFFF is no escape at all: the text stays as written.
    Some((Escaped::Char(char::from_u32(v)?), 11))
}

fn push_unit(out: &mut String, pending_high: &mut Option<u16>, unit: u16) {
    match unit {
        0xD800..=0xDBFF => {
            flush_high(out, pending_high);
            *pending_high = Some(unit);
        }
        0xDC00..=0xDFFF => match pending_high.take() {
            Some(high) => {
                let c = char::decode_utf16([high, unit]).next().and_then(Result::ok);
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            None => out.push(char::REPLACEMENT_CHARACTER),
        },
        _ => {
            flush_high(out, pending_high);
            out.push(char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
    }
}

fn flush_high(out: &mut String, pending_high: &mut Option<u16>) {
    if pending_high.take().is_some() {
        out.push(char::REPLACEMENT_CHARACTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The next two constants are copied from pypsrp's and psrpcore's test suites
    // (tests/test_serializer.py, tests/conftest.py; both MIT licensed, (c) Jordan Borean): a string
    // with a control character, `_x`/`_X` look-alikes, a character outside the BMP (U+1D11E) and a
    // non-ASCII BMP character, and its CLIXML form.
    const COMPLEX_STRING: &str = "treble clef\n _x0000_ _X0000_ \u{1D11E} café";
    const COMPLEX_ENCODED_STRING: &str = "treble clef_x000A_ _x005F_x0000_ _x005F_X0000_ _xD834__xDD1E_ café";

    #[test]
    fn pypsrp_complex_string() {
        assert_eq!(encode(COMPLEX_STRING), COMPLEX_ENCODED_STRING);
        assert_eq!(decode(COMPLEX_ENCODED_STRING), COMPLEX_STRING);
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(encode("hello _ world x_"), Cow::Borrowed(_)));
        assert!(matches!(decode("hello world"), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_and_c1() {
        assert_eq!(
            encode("\r\n\t\u{0}\u{7F}\u{85}\u{9F}\u{A0}"),
            "_x000D__x000A__x0009__x0000__x007F__x0085__x009F_\u{A0}"
        );
        assert_eq!(decode("_x000D__x000A_"), "\r\n");
    }

    #[test]
    fn underscore_before_x_only() {
        assert_eq!(encode("a_b"), "a_b");
        assert_eq!(encode("_x"), "_x005F_x");
        assert_eq!(encode("__x"), "__x005F_x");
        assert_eq!(encode("_"), "_");
        assert_eq!(decode("__x005F_x"), "__x");
    }

    #[test]
    fn decoding_is_case_insensitive_and_knows_eight_digits() {
        assert_eq!(decode("_X0041_"), "A");
        assert_eq!(decode("_x00e9_"), "é");
        assert_eq!(decode("_x0001F600_"), "\u{1F600}");
        assert_eq!(decode("_x00000041_"), "A");
        // Not escapes: wrong length, no closing underscore, non-hex, beyond U+10FFFF.
        for literal in ["_x41_", "_x0041", "_x00G1_", "_x7FFFFFFF_", "_y0041_", "_x_"] {
            assert_eq!(decode(literal), literal);
        }
    }

    #[test]
    fn surrogates() {
        assert_eq!(encode("\u{1F600}"), "_xD83D__xDE00_");
        assert_eq!(decode("_xD83D__xDE00_"), "\u{1F600}");
        assert_eq!(decode("_xd83d__xde00_"), "\u{1F600}");
        // Unpaired halves cannot live in a Rust string.
        assert_eq!(decode("_xD83D_"), "\u{FFFD}");
        assert_eq!(decode("_xDE00_a"), "\u{FFFD}a");
        assert_eq!(decode("_xD83D_a_xDE00_"), "\u{FFFD}a\u{FFFD}");
        assert_eq!(decode("_xD83D__xD83D__xDE00_"), "\u{FFFD}\u{1F600}");
        // Characters next to the surrogate range are ordinary.
        assert_eq!(encode("\u{D7FF}\u{E000}\u{FFFD}"), "\u{D7FF}\u{E000}\u{FFFD}");
        assert_eq!(encode("\u{FFFE}\u{FFFF}"), "_xFFFE__xFFFF_");
        assert_eq!(encode("\u{10FFFF}"), "_xDBFF__xDFFF_");
    }

    #[test]
    fn xml_contexts() {
        let mut text = String::new();
        push_encoded(&mut text, "a<b>&\"c\"_x\n", XmlContext::Text);
        assert_eq!(text, "a&lt;b&gt;&amp;\"c\"_x005F_x_x000A_");
        let mut attr = String::new();
        push_encoded(&mut attr, "say \"hi\" & <go>", XmlContext::Attribute);
        assert_eq!(attr, "say &quot;hi&quot; &amp; &lt;go&gt;");
    }

    #[test]
    fn round_trip_of_awkward_text() {
        for s in [
            "",
            "_",
            "_x",
            "_x_",
            "_x0000_",
            "_X005F_",
            "x_x_x",
            "\u{0}",
            "é_x\u{1F600}_X",
        ] {
            assert_eq!(decode(&encode(s)), s, "{s:?}");
        }
    }
}
