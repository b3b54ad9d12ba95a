//! `PsValue` to CLIXML text.
//!
//! The output is what PowerShell's own serializer writes for message data (MS-PSRP 2.2.5, and
//! `InternalSerializer` in PowerShell's `serialization.cs`):
//! - no XML declaration, no whitespace between elements, no namespace on the elements;
//! - an object is `<Obj N=".." RefId="n">` with, in this order, `<TN RefId="t">` (or `<TNRef>` for a
//!   type-name list written before), `<ToString>`, the wrapped value or the list/dictionary,
//!   `<Props>`, `<MS>`;
//! - object RefIds count 0, 1, 2... and type-name RefIds count separately, both per [`Serializer`],
//!   so several values written by one serializer (one message, or the objects of one `<Objs>`
//!   document) share the numbering;
//! - an object met a second time (the same `Arc`) is written `<Ref RefId="n" />`;
//! - an empty string is `<S></S>`, `$null` is `<Nil />`, an empty list `<LST />`.
//!
//! Strings, property names, type names and `<ToString>` are escaped as in [`super::escape`].
//!
//! Writing recurses once per level of nesting; values read by [`super::parse`] are at most
//! [`super::Limits::max_depth`] deep, and values built in code are as deep as their builder made
//! them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::dotnet;
use super::escape::{XmlContext, push_encoded};
use super::value::{ObjContent, PsObject, PsProperties, PsValue};

/// The namespace of the `<Objs>` document element.
pub const CLIXML_NAMESPACE: &str = "http://schemas.microsoft.com/powershell/2004/04";
/// The `Version` attribute PowerShell writes on `<Objs>`.
pub const CLIXML_VERSION: &str = "1.1.0.1";

/// Writes values as CLIXML, numbering object and type-name RefIds across all the values it writes.
///
/// Use one serializer per PSRP message (PowerShell starts each message's numbering at 0), or per
/// `<Objs>` document. [`to_clixml`] is the one-value shortcut.
#[derive(Debug, Default)]
pub struct Serializer {
    next_ref_id: u32,
    /// Objects written so far, by address, with a handle that keeps the address from being reused.
    seen: HashMap<usize, (u32, Arc<PsObject>)>,
    type_refs: HashMap<Vec<String>, u32>,
}

impl Serializer {
    pub fn new() -> Serializer {
        Serializer::default()
    }

    /// The CLIXML element for `value`.
    pub fn serialize(&mut self, value: &PsValue) -> String {
        let mut out = String::new();
        self.serialize_into(&mut out, value);
        out
    }

    /// Appends the CLIXML element for `value` to `out`.
    pub fn serialize_into(&mut self, out: &mut String, value: &PsValue) {
        self.write(out, None, value);
    }

    fn write(&mut self, out: &mut String, name: Option<&str>, value: &PsValue) {
        let tag = value.tag();
        match value {
            PsValue::Nil => return empty_element(out, tag, name, None),
            PsValue::Object(obj) => return self.write_object(out, name, obj),
            _ => {}
        }
        start_element(out, tag, name);
        // Numbers, booleans, base64 and GUIDs need no escaping and are written as they are; text,
        // and a DateTime's text (checked on the way in, but kept as given), go through the escaper.
        let _ = match value {
            PsValue::Nil | PsValue::Object(_) => Ok(()),
            PsValue::Str(s)
            | PsValue::Uri(s)
            | PsValue::XmlDocument(s)
            | PsValue::ScriptBlock(s)
            | PsValue::Decimal(s) => {
                push_encoded(out, s, XmlContext::Text);
                Ok(())
            }
            PsValue::DateTime(dt) => {
                push_encoded(out, dt.as_str(), XmlContext::Text);
                Ok(())
            }
            PsValue::Char(c) => write!(out, "{c}"),
            PsValue::Bool(b) => {
                out.push_str(if *b { "true" } else { "false" });
                Ok(())
            }
            PsValue::Duration(d) => write!(out, "{d}"),
            PsValue::U8(v) => write!(out, "{v}"),
            PsValue::I8(v) => write!(out, "{v}"),
            PsValue::U16(v) => write!(out, "{v}"),
            PsValue::I16(v) => write!(out, "{v}"),
            PsValue::U32(v) => write!(out, "{v}"),
            PsValue::I32(v) => write!(out, "{v}"),
            PsValue::U64(v) => write!(out, "{v}"),
            PsValue::I64(v) => write!(out, "{v}"),
            PsValue::Single(v) => {
                out.push_str(&dotnet::format_single(*v));
                Ok(())
            }
            PsValue::Double(v) => {
                out.push_str(&dotnet::format_double(*v));
                Ok(())
            }
            PsValue::Bytes(b) => {
                BASE64.encode_string(b, out);
                Ok(())
            }
            PsValue::SecureString(b) => {
                BASE64.encode_string(&b.0, out);
                Ok(())
            }
            PsValue::Guid(g) => write!(out, "{}", g.hyphenated()),
            PsValue::Version(v) => write!(out, "{v}"),
        };
        end_element(out, tag);
    }

    fn write_object(&mut self, out: &mut String, name: Option<&str>, obj: &Arc<PsObject>) {
        let key = Arc::as_ptr(obj) as usize;
        if let Some((ref_id, _)) = self.seen.get(&key) {
            let ref_id = *ref_id;
            empty_element(out, "Ref", name, Some(ref_id));
            return;
        }
        let ref_id = self.next_ref_id;
        self.next_ref_id = self.next_ref_id.wrapping_add(1);
        // An object only this value holds cannot be met again while it is being written (the
        // value is borrowed, so no second holder can appear in it): only shared ones are kept.
        if Arc::strong_count(obj) > 1 {
            self.seen.insert(key, (ref_id, Arc::clone(obj)));
        }

        let is_empty = obj.type_names.is_empty()
            && obj.to_string.is_none()
            && matches!(obj.content, ObjContent::None)
            && obj.adapted.is_empty()
            && obj.extended.is_empty();
        if is_empty {
            empty_element(out, "Obj", name, Some(ref_id));
            return;
        }
        out.push_str("<Obj");
        push_attributes(out, name, Some(ref_id));
        out.push('>');

        if !obj.type_names.is_empty() {
            match self.type_refs.get(&obj.type_names) {
                Some(tn_id) => {
                    let _ = write!(out, "<TNRef RefId=\"{tn_id}\" />");
                }
                None => {
                    let tn_id = u32::try_from(self.type_refs.len()).unwrap_or(u32::MAX);
                    self.type_refs.insert(obj.type_names.clone(), tn_id);
                    let _ = write!(out, "<TN RefId=\"{tn_id}\">");
                    for t in &obj.type_names {
                        out.push_str("<T>");
                        push_encoded(out, t, XmlContext::Text);
                        out.push_str("</T>");
                    }
                    out.push_str("</TN>");
                }
            }
        }
        if let Some(s) = &obj.to_string {
            out.push_str("<ToString>");
            push_encoded(out, s, XmlContext::Text);
            out.push_str("</ToString>");
        }
        match &obj.content {
            ObjContent::None => {}
            ObjContent::Value(v) => self.write(out, None, v),
            ObjContent::List(kind, items) => {
                let tag = kind.tag();
                if items.is_empty() {
                    empty_element(out, tag, None, None);
                } else {
                    start_element(out, tag, None);
                    for item in items {
                        self.write(out, None, item);
                    }
                    end_element(out, tag);
                }
            }
            ObjContent::Dict(entries) => {
                if entries.is_empty() {
                    empty_element(out, "DCT", None, None);
                } else {
                    out.push_str("<DCT>");
                    for (k, v) in entries {
                        out.push_str("<En>");
                        self.write(out, Some("Key"), k);
                        self.write(out, Some("Value"), v);
                        out.push_str("</En>");
                    }
                    out.push_str("</DCT>");
                }
            }
        }
        self.write_properties(out, "Props", &obj.adapted);
        self.write_properties(out, "MS", &obj.extended);
        out.push_str("</Obj>");
    }

    fn write_properties(&mut self, out: &mut String, tag: &str, props: &PsProperties) {
        if props.is_empty() {
            return;
        }
        start_element(out, tag, None);
        for (name, value) in props.iter() {
            self.write(out, Some(name), value);
        }
        end_element(out, tag);
    }
}

fn push_attributes(out: &mut String, name: Option<&str>, ref_id: Option<u32>) {
    if let Some(name) = name {
        out.push_str(" N=\"");
        push_encoded(out, name, XmlContext::Attribute);
        out.push('"');
    }
    if let Some(ref_id) = ref_id {
        let _ = write!(out, " RefId=\"{ref_id}\"");
    }
}

fn start_element(out: &mut String, tag: &str, name: Option<&str>) {
    out.push('<');
    out.push_str(tag);
    push_attributes(out, name, None);
    out.push('>');
}

fn end_element(out: &mut String, tag: &str) {
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn empty_element(out: &mut String, tag: &str, name: Option<&str>, ref_id: Option<u32>) {
    out.push('<');
    out.push_str(tag);
    push_attributes(out, name, ref_id);
    out.push_str(" />");
}

/// The CLIXML element for one value, numbered from 0: what a PSRP message's data holds.
pub fn to_clixml(value: &PsValue) -> String {
    Serializer::new().serialize(value)
}

/// An `<Objs>` document holding `values`, numbered across all of them, as
/// `[System.Management.Automation.PSSerializer]::Serialize` and `Export-Clixml` write it (without
/// their indentation and without the `#< CLIXML` line of `pwsh -OutputFormat xml`).
pub fn to_clixml_document(values: &[PsValue]) -> String {
    let mut serializer = Serializer::new();
    let mut out = format!("<Objs Version=\"{CLIXML_VERSION}\" xmlns=\"{CLIXML_NAMESPACE}\">");
    for v in values {
        serializer.serialize_into(&mut out, v);
    }
    out.push_str("</Objs>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clixml::value::{ListKind, PsDateTime, PsDuration, PsVersion, SecureBytes};
    use uuid::Uuid;

    // Expected forms below are from psrpcore's tests/types/test_serializer.py and pypsrp's
    // tests/test_serializer.py (both MIT licensed, (c) Jordan Borean).
    #[test]
    fn primitives_as_psrpcore_writes_them() {
        let cases: Vec<(PsValue, &str)> = vec![
            (PsValue::Bool(true), "<B>true</B>"),
            (PsValue::Bool(false), "<B>false</B>"),
            (PsValue::U8(1), "<By>1</By>"),
            (PsValue::Bytes(vec![0, 1, 2, 3]), "<BA>AAECAw==</BA>"),
            (PsValue::Char(97), "<C>97</C>"),
            (
                PsValue::DateTime(PsDateTime::parse("1970-01-01T00:00:00Z").unwrap()),
                "<DT>1970-01-01T00:00:00Z</DT>",
            ),
            (PsValue::Decimal("1".into()), "<D>1</D>"),
            (
                PsValue::Duration(PsDuration::from_ticks(864_000_000_000)),
                "<TS>P1D</TS>",
            ),
            (
                PsValue::Guid(Uuid::nil()),
                "<G>00000000-0000-0000-0000-000000000000</G>",
            ),
            (PsValue::I32(1), "<I32>1</I32>"),
            (PsValue::I16(1), "<I16>1</I16>"),
            (PsValue::I64(1), "<I64>1</I64>"),
            (PsValue::I8(1), "<SB>1</SB>"),
            (PsValue::U32(1), "<U32>1</U32>"),
            (PsValue::U16(1), "<U16>1</U16>"),
            (PsValue::U64(1), "<U64>1</U64>"),
            (
                PsValue::Version(PsVersion::parse("1.2.3.4").unwrap()),
                "<Version>1.2.3.4</Version>",
            ),
            (
                PsValue::Str("treble clef\n _x0000_ _X0000_ \u{1D11E} café".into()),
                "<S>treble clef_x000A_ _x005F_x0000_ _x005F_X0000_ _xD834__xDD1E_ café</S>",
            ),
            (
                PsValue::Uri("http://x/?a=1&b=<2>".into()),
                "<URI>http://x/?a=1&amp;b=&lt;2&gt;</URI>",
            ),
            (PsValue::ScriptBlock("$a -gt 1".into()), "<SBK>$a -gt 1</SBK>"),
            (PsValue::XmlDocument("<a/>".into()), "<XD>&lt;a/&gt;</XD>"),
            (PsValue::SecureString(SecureBytes(vec![0xFF])), "<SS>/w==</SS>"),
            (PsValue::Str(String::new()), "<S></S>"),
            (PsValue::Nil, "<Nil />"),
        ];
        for (value, expected) in cases {
            assert_eq!(to_clixml(&value), expected);
        }
        // psrpcore writes a Python float as "1.0"; PowerShell (and this serializer) write "1".
        assert_eq!(to_clixml(&PsValue::Double(1.0)), "<Db>1</Db>");
        assert_eq!(to_clixml(&PsValue::Single(1.5)), "<Sg>1.5</Sg>");
    }

    #[test]
    fn custom_object_as_psrpcore_writes_it() {
        // psrpcore tests/types/test_complex.py::test_ps_custom_object_type_name, with PowerShell's
        // element order (ToString before MS).
        let mut obj = PsObject::custom([("My Property", "Value")]);
        obj.type_names.insert(0, "MyType".into());
        obj.to_string = Some("to string value".into());
        assert_eq!(
            to_clixml(&obj.into()),
            "<Obj RefId=\"0\"><TN RefId=\"0\"><T>MyType</T><T>System.Management.Automation.PSCustomObject</T>\
             <T>System.Object</T></TN><ToString>to string value</ToString><MS><S N=\"My Property\">Value</S></MS>\
             </Obj>"
        );
    }

    #[test]
    fn enum_like_objects_put_the_value_after_tostring() {
        // The PSThreadOptions of pypsrp's recorded INIT_RUNSPACEPOOL (tests/responses, MIT).
        let obj = PsObject {
            type_names: [
                "System.Management.Automation.Runspaces.PSThreadOptions",
                "System.Enum",
                "System.ValueType",
                "System.Object",
            ]
            .map(String::from)
            .to_vec(),
            to_string: Some("Default".into()),
            content: ObjContent::Value(PsValue::I32(0)),
            ..PsObject::default()
        };
        let mut s = Serializer::new();
        let mut out = String::new();
        s.next_ref_id = 1;
        s.write(&mut out, Some("PSThreadOptions"), &obj.into());
        assert_eq!(
            out,
            "<Obj N=\"PSThreadOptions\" RefId=\"1\"><TN RefId=\"0\"><T>System.Management.Automation.Runspaces.PSThreadOptions</T>\
             <T>System.Enum</T><T>System.ValueType</T><T>System.Object</T></TN><ToString>Default</ToString>\
             <I32>0</I32></Obj>"
        );
    }

    #[test]
    fn numbering_tn_refs_and_refs() {
        let shared: Arc<PsObject> = Arc::new(PsObject::custom([("A", 1)]));
        let list = PsValue::array([
            PsValue::Object(Arc::clone(&shared)),
            PsValue::from(PsObject::custom([("B", 2)])),
            PsValue::Object(Arc::clone(&shared)),
        ]);
        assert_eq!(
            to_clixml(&list),
            "<Obj RefId=\"0\"><TN RefId=\"0\"><T>System.Object[]</T><T>System.Array</T><T>System.Object</T></TN><LST>\
             <Obj RefId=\"1\"><TN RefId=\"1\"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>\
             <MS><I32 N=\"A\">1</I32></MS></Obj>\
             <Obj RefId=\"2\"><TNRef RefId=\"1\" /><MS><I32 N=\"B\">2</I32></MS></Obj>\
             <Ref RefId=\"1\" /></LST></Obj>"
        );
        // A serializer keeps numbering across values; a new one starts again.
        let mut s = Serializer::new();
        assert_eq!(
            s.serialize(&PsObject::custom([("A", 1)]).into()),
            to_clixml(&PsObject::custom([("A", 1)]).into())
        );
        assert!(
            s.serialize(&PsObject::custom([("A", 1)]).into())
                .starts_with("<Obj RefId=\"1\"><TNRef RefId=\"0\" />")
        );
    }

    #[test]
    fn containers_and_names() {
        let mut obj = PsObject::new();
        obj.content = ObjContent::Dict(vec![(PsValue::from("k"), PsValue::Nil)]);
        obj.adapted.insert(
            "a\"b<_x>",
            PsValue::from(PsObject {
                content: ObjContent::List(ListKind::Stack, vec![]),
                ..PsObject::default()
            }),
        );
        assert_eq!(
            to_clixml(&obj.into()),
            "<Obj RefId=\"0\"><DCT><En><S N=\"Key\">k</S><Nil N=\"Value\" /></En></DCT>\
             <Props><Obj N=\"a&quot;b&lt;_x005F_x&gt;\" RefId=\"1\"><STK /></Obj></Props></Obj>"
        );
        assert_eq!(to_clixml(&PsObject::new().into()), "<Obj RefId=\"0\" />");
    }

    #[test]
    fn documents() {
        assert_eq!(
            to_clixml_document(&[PsValue::I32(1), PsValue::from("a")]),
            "<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><I32>1</I32><S>a</S></Objs>"
        );
    }
}
