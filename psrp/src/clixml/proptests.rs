//! Property tests: random value trees survive `to_clixml` then `parse`; random and damaged input
//! gives errors, never panics.

use proptest::prelude::*;
use uuid::Uuid;

use super::escape::{decode, encode};
use super::value::{
    ListKind, ObjContent, PsDateTime, PsDuration, PsObject, PsProperties, PsValue, PsVersion, SecureBytes,
};
use super::{
    PS_CUSTOM_OBJECT_TYPE_NAMES, parse, parse_document, to_clixml, to_clixml_document, to_json, to_text,
};

/// Characters that stress the escaping: control characters, `_x` look-alikes, the edges of the
/// surrogate range, non-characters, characters outside the BMP, XML specials.
fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        5 => prop::sample::select(vec![
            '_', 'x', 'X', '0', '5', 'F', 'd', '\0', '\t', '\n', '\r', '\u{B}', '\u{1F}', '\u{7F}', '\u{85}',
            '\u{9F}', '\u{A0}', '\u{2028}', '\u{D7FF}', '\u{E000}', '\u{FEFF}', '\u{FFFD}', '\u{FFFE}', '\u{FFFF}',
            '\u{10000}', '\u{1D11E}', '\u{1F600}', '\u{10FFFF}', '&', '<', '>', '"', '\'', ']', ' ', 'é', 'こ',
        ]),
    ]
}

fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(awkward_char(), 0..20).prop_map(|cs| cs.into_iter().collect()),
        1 => "(_[xX][0-9a-fA-F]{4}_|_[xX][0-9a-fA-F]{8}_|_x|_)+",
        1 => "[ \t\r\n]{0,4}",
        1 => "[a-zA-Z0-9 .-]{0,12}",
    ]
}

fn datetime() -> impl Strategy<Value = PsDateTime> {
    (
        (1i32..=9999, 1i32..=12, 1i32..=28, 0i32..24, 0i32..60, 0i32..60),
        prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"],
        prop_oneof![
            Just(String::new()),
            Just("Z".to_owned()),
            (any::<bool>(), 0i32..=14, 0i32..60).prop_map(|(neg, h, m)| {
                let m = if h == 14 { 0 } else { m };
                format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })
            }),
        ],
    )
        .prop_map(|((y, mo, d, h, mi, s), fraction, zone)| {
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}{zone}");
            PsDateTime::parse(&text).expect("generated a valid DateTime")
        })
}

fn version() -> impl Strategy<Value = PsVersion> {
    let component = 0u32..=i32::MAX.unsigned_abs();
    (
        component.clone(),
        component.clone(),
        prop::option::of((component.clone(), prop::option::of(component))),
    )
        .prop_map(|(major, minor, rest)| PsVersion {
            major,
            minor,
            build: rest.map(|(b, _)| b),
            revision: rest.and_then(|(_, r)| r),
        })
}

fn primitive() -> impl Strategy<Value = PsValue> {
    prop_oneof![
        Just(PsValue::Nil),
        awkward_string().prop_map(PsValue::Str),
        any::<u16>().prop_map(PsValue::Char),
        any::<bool>().prop_map(PsValue::Bool),
        datetime().prop_map(PsValue::DateTime),
        any::<i64>().prop_map(|t| PsValue::Duration(PsDuration::from_ticks(t))),
        any::<u8>().prop_map(PsValue::U8),
        any::<i8>().prop_map(PsValue::I8),
        any::<u16>().prop_map(PsValue::U16),
        any::<i16>().prop_map(PsValue::I16),
        any::<u32>().prop_map(PsValue::U32),
        any::<i32>().prop_map(PsValue::I32),
        any::<u64>().prop_map(PsValue::U64),
        any::<i64>().prop_map(PsValue::I64),
        any::<f32>().prop_map(PsValue::Single),
        any::<f64>().prop_map(PsValue::Double),
        "[+-]?([0-9]{1,29}(\\.[0-9]{0,10})?|\\.[0-9]{1,10})".prop_map(PsValue::Decimal),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(PsValue::Bytes),
        any::<u128>().prop_map(|n| PsValue::Guid(Uuid::from_u128(n))),
        awkward_string().prop_map(PsValue::Uri),
        version().prop_map(PsValue::Version),
        awkward_string().prop_map(PsValue::XmlDocument),
        awkward_string().prop_map(PsValue::ScriptBlock),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| PsValue::SecureString(SecureBytes(b))),
    ]
}

fn type_names() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(Vec::new()),
        Just(PS_CUSTOM_OBJECT_TYPE_NAMES.map(String::from).to_vec()),
        Just(vec![
            "System.Object[]".to_owned(),
            "System.Array".to_owned(),
            "System.Object".to_owned()
        ]),
        prop::collection::vec(awkward_string(), 1..3),
    ]
}

fn properties(inner: impl Strategy<Value = PsValue> + Clone) -> impl Strategy<Value = PsProperties> {
    prop::collection::vec((awkward_string(), inner), 0..4).prop_map(|v| v.into_iter().collect())
}

fn value() -> impl Strategy<Value = PsValue> {
    primitive().prop_recursive(5, 96, 6, |inner| {
        let content = prop_oneof![
            Just(ObjContent::None),
            inner.clone().prop_map(ObjContent::Value),
            (
                prop::sample::select(vec![
                    ListKind::List,
                    ListKind::Enumerable,
                    ListKind::Queue,
                    ListKind::Stack
                ]),
                prop::collection::vec(inner.clone(), 0..5)
            )
                .prop_map(|(kind, items)| ObjContent::List(kind, items)),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(ObjContent::Dict),
        ];
        let object = (
            type_names(),
            prop::option::of(awkward_string()),
            content,
            properties(inner.clone()),
            properties(inner.clone()),
        )
            .prop_map(|(type_names, to_string, content, adapted, extended)| {
                PsValue::from(PsObject {
                    type_names,
                    to_string,
                    content,
                    adapted,
                    extended,
                })
            });
        prop_oneof![
            4 => object,
            // The same object twice (one Arc): written once and then as a <Ref>.
            1 => inner.prop_map(|v| PsValue::array([v.clone(), PsValue::I32(0), v])),
        ]
    })
}

/// Pieces of CLIXML (and of broken CLIXML) that random input is made of.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "<Obj>", "<Obj RefId=\"0\">", "<Obj RefId=\"1\" N=\"p\">", "</Obj>", "<LST>", "</LST>", "<IE>", "</IE>",
            "<DCT>", "</DCT>", "<En>", "</En>", "<S N=\"Key\">k</S>", "<I32 N=\"Value\">1</I32>", "<MS>", "</MS>",
            "<Props>", "</Props>", "<S>", "</S>", "<S N=\"a\">", "<Nil />", "<Ref RefId=\"0\" />",
            "<Ref RefId=\"1\" N=\"r\"/>", "<TN RefId=\"0\"><T>T</T></TN>", "<TNRef RefId=\"0\" />", "<ToString>",
            "</ToString>", "<PR>", "</PR>", "<AV>a</AV>", "<DT>2020-01-01T00:00:00Z</DT>", "<TS>PT1S</TS>",
            "<Db>1E+300</Db>", "<BA>AAEC</BA>", "<Objs>", "</Objs>", "_x0041_", "_xD800_", "&amp;", "&#x1F600;",
            "&bogus;", "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>", "<!DOCTYPE a>", "<", ">", "\"", "=", " ",
        ])
        .prop_map(str::to_owned),
        1 => awkward_string(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn values_round_trip(v in value()) {
        let xml = to_clixml(&v);
        let back = parse(&xml);
        prop_assert_eq!(back.as_ref(), Ok(&v), "{}", xml);
        // Reading and writing again changes nothing: the serializer is a fixed point.
        prop_assert_eq!(to_clixml(&back.unwrap()), xml);
    }

    #[test]
    fn documents_round_trip(vs in prop::collection::vec(value(), 0..4)) {
        let xml = to_clixml_document(&vs);
        prop_assert_eq!(parse_document(&xml), Ok(vs), "{}", xml);
    }

    #[test]
    fn rendering_never_panics(v in value()) {
        let _ = to_json(&v);
        let _ = to_text(&v);
        let s = serde_json::to_string(&to_json(&v));
        prop_assert!(s.is_ok());
    }

    #[test]
    fn strings_escape_both_ways(s in awkward_string()) {
        let e = encode(&s);
        prop_assert_eq!(decode(&e), s.as_str());
        // The escaped form holds nothing a reader could take for a control character.
        prop_assert!(!e.chars().any(|c| c.is_control() || u32::from(c) > 0xFFFF));
    }

    #[test]
    fn decoding_anything_is_safe(s in ".*") {
        let _ = decode(&s);
    }

    #[test]
    fn random_input_is_an_error_not_a_panic(pieces in prop::collection::vec(fragment(), 0..40)) {
        let xml: String = pieces.concat();
        let _ = parse(&xml);
        let _ = parse_document(&xml);
    }

    #[test]
    fn damaged_output_is_an_error_not_a_panic(v in value(), cut in any::<prop::sample::Index>(), len in 0usize..16) {
        let xml = to_clixml(&v);
        let mut at = cut.index(xml.len().max(1));
        while !xml.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(xml.len());
        while !xml.is_char_boundary(end) {
            end -= 1;
        }
        let truncated = &xml[..at];
        let _ = parse(truncated);
        let spliced = format!("{}{}", &xml[..at], &xml[end..]);
        let _ = parse(&spliced);
    }
}

#[test]
fn vectors_from_powershell_round_trip_byte_for_byte() {
    for xml in super::tests_vectors::FROM_POWERSHELL {
        let value = parse(xml).unwrap();
        assert_eq!(to_clixml(&value), *xml);
    }
}
