//! CLIXML text to `PsValue`.
//!
//! What is accepted, beyond exactly what PowerShell writes:
//! - a UTF-8 byte order mark (as U+FEFF) at the start, an XML declaration, comments, processing
//!   instructions, whitespace between elements (pretty-printed CLIXML), CDATA sections and character
//!   references in text, namespace prefixes on element names, a `#< CLIXML` first line before an
//!   `<Objs>` document (`pwsh -OutputFormat xml`);
//! - children of `<Obj>` in any order; the `S` (stream) attribute of top-level objects is ignored;
//! - `<PR>`, the ProgressRecord element of `pwsh -OutputFormat xml` (undocumented, read as psrpcore
//!   reads it), becomes a `System.Management.Automation.ProgressRecord` object with adapted
//!   properties `Activity`, `ActivityId`, `CurrentOperation`, `ParentActivityId`, `PercentComplete`,
//!   `RecordType` (a string), `SecondsRemaining` and `StatusDescription`.
//!
//! What is refused, with a [`ClixmlError`] and never a panic: malformed XML, a DOCTYPE, an element
//! CLIXML does not define or one out of place, text where only elements belong, bad primitive text,
//! a `<Ref>`/`<TNRef>` to an id not seen before, and anything beyond the [`Limits`].
//!
//! References: a `<Ref RefId>` to an object read earlier gives another handle on the same
//! [`Arc`]. A `<Ref>` to an object still being read (a cycle: an object that contains itself, which
//! PowerShell can write) cannot be a tree; it becomes a stand-in object carrying the type names and
//! `ToString` read so far, and no properties.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use uuid::Uuid;

use super::dotnet;
use super::error::{ClixmlError, quote};
use super::escape::decode;
use super::value::{
    ListKind, ObjContent, PsDateTime, PsDuration, PsObject, PsProperties, PsValue, PsVersion, SecureBytes,
};

/// Bounds that keep hostile input from exhausting the stack or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most objects (`<Obj>`) open inside one another. Reading recurses once per level, so this
    /// bounds the stack. Default 64: PowerShell's deepest remoting output (an ErrorRecord with its
    /// exception, invocation info and their members) is under 10.
    pub max_depth: usize,
    /// Largest input in bytes. Default 200 MiB, PowerShell's own `MaximumReceivedObjectSizeMB`.
    pub max_input_bytes: usize,
    /// Largest size, in bytes of CLIXML, the value would have with every `<Ref>` and `<TNRef>`
    /// written out in full: the input's size plus, for each reference, the size of the element it
    /// refers to. References are shared, not copied, so this bounds the work of anyone who walks
    /// the value (rendering it, writing it again), which could otherwise grow exponentially with
    /// nested references. Default 400 MiB.
    pub max_expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 64,
            max_input_bytes: 200 << 20,
            max_expanded_bytes: 400 << 20,
        }
    }
}

/// Reads one CLIXML element, what a PSRP message's data holds (`<Obj RefId="0">...</Obj>`, or a
/// primitive like `<S>text</S>`), with the default [`Limits`].
pub fn parse(xml: &str) -> Result<PsValue, ClixmlError> {
    parse_with_limits(xml, &Limits::default())
}

/// [`parse`] with other [`Limits`].
pub fn parse_with_limits(xml: &str, limits: &Limits) -> Result<PsValue, ClixmlError> {
    let mut parser = Parser::new(xml, limits)?;
    let (start, empty) = parser.first_element()?;
    let (_, value) = parser.value(&start, empty, "the document")?;
    parser.end_of_document()?;
    Ok(value)
}

/// Reads an `<Objs>` document (`Export-Clixml`, `PSSerializer`, `pwsh -OutputFormat xml` with or
/// without its `#< CLIXML` line) into its values, with the default [`Limits`].
pub fn parse_document(xml: &str) -> Result<Vec<PsValue>, ClixmlError> {
    parse_document_with_limits(xml, &Limits::default())
}

/// [`parse_document`] with other [`Limits`].
pub fn parse_document_with_limits(xml: &str, limits: &Limits) -> Result<Vec<PsValue>, ClixmlError> {
    let xml = xml.strip_prefix('\u{FEFF}').unwrap_or(xml);
    let xml = match xml.strip_prefix("#< CLIXML") {
        Some(rest) => rest.trim_start_matches(['\r', '\n']),
        None => xml,
    };
    let mut parser = Parser::new(xml, limits)?;
    let (start, empty) = parser.first_element()?;
    if start.local_name().as_ref() != b"Objs" {
        return Err(ClixmlError::unexpected_element(
            &element_name(&start),
            "the document (expected <Objs>)",
        ));
    }
    let mut values = Vec::new();
    if !empty {
        while let Some((child, empty)) = parser.child("<Objs>")? {
            values.push(parser.value(&child, empty, "<Objs>")?.1);
        }
    }
    parser.end_of_document()?;
    Ok(values)
}

/// An `<Obj>` being read, for a `<Ref>` that points back at it.
struct OpenObject {
    ref_id: Option<String>,
    /// The RefId of its type-name list.
    type_names: Option<String>,
    to_string: Option<String>,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    limits: Limits,
    input_len: u64,
    /// Where the event last read began.
    event_start: u64,
    /// Objects read so far by RefId, with the size of their element.
    objects: HashMap<String, (Arc<PsObject>, u64)>,
    /// Type-name lists read so far by RefId, with the size of their `<TN>` element.
    type_names: HashMap<String, (Vec<String>, u64)>,
    open: Vec<OpenObject>,
    /// What references have added to the expanded size.
    expanded: u64,
}

type Element<'a> = (BytesStart<'a>, bool);

impl<'a> Parser<'a> {
    fn new(xml: &'a str, limits: &Limits) -> Result<Parser<'a>, ClixmlError> {
        let xml = xml.strip_prefix('\u{FEFF}').unwrap_or(xml);
        if xml.len() > limits.max_input_bytes {
            return Err(ClixmlError::InputTooLarge {
                size: xml.len(),
                limit: limits.max_input_bytes,
            });
        }
        let mut reader = Reader::from_str(xml);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Ok(Parser {
            reader,
            limits: *limits,
            input_len: u64::try_from(xml.len()).unwrap_or(u64::MAX),
            event_start: 0,
            objects: HashMap::new(),
            type_names: HashMap::new(),
            open: Vec::new(),
            expanded: 0,
        })
    }

    fn next(&mut self) -> Result<Event<'a>, ClixmlError> {
        self.event_start = self.reader.buffer_position();
        self.reader.read_event().map_err(|e| ClixmlError::Xml {
            position: self.reader.error_position(),
            message: quote(&e.to_string()),
        })
    }

    fn xml_error(&self, message: impl Into<String>) -> ClixmlError {
        ClixmlError::Xml {
            position: self.event_start,
            message: message.into(),
        }
    }

    /// Skips the prolog (declaration, comments, whitespace) up to the document element.
    fn first_element(&mut self) -> Result<Element<'a>, ClixmlError> {
        loop {
            match self.next()? {
                Event::Start(e) => return Ok((e, false)),
                Event::Empty(e) => return Ok((e, true)),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::DocType(_) => return Err(ClixmlError::DocType),
                Event::Text(t) if is_whitespace(&t) => {}
                Event::Text(t) => return Err(ClixmlError::unexpected_text(&lossy(&t), "the document")),
                Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(ClixmlError::unexpected_text("<![CDATA[ or &", "the document"));
                }
                Event::End(_) => return Err(self.xml_error("end tag before any element")),
                Event::Eof => return Err(ClixmlError::Empty),
            }
        }
    }

    /// After the document element: only comments, processing instructions and whitespace.
    fn end_of_document(&mut self) -> Result<(), ClixmlError> {
        loop {
            match self.next()? {
                Event::Eof => return Ok(()),
                Event::Comment(_) | Event::PI(_) => {}
                Event::Text(t) if is_whitespace(&t) => {}
                Event::Start(e) | Event::Empty(e) => {
                    return Err(ClixmlError::TrailingContent {
                        found: format!("<{}>", element_name(&e)),
                    });
                }
                Event::Text(t) => {
                    return Err(ClixmlError::TrailingContent {
                        found: quote(&lossy(&t)),
                    });
                }
                _ => {
                    return Err(ClixmlError::TrailingContent {
                        found: "markup".into(),
                    });
                }
            }
        }
    }

    /// The next child element of an element that holds only elements, or `None` at its end tag.
    fn child(&mut self, context: &'static str) -> Result<Option<Element<'a>>, ClixmlError> {
        loop {
            match self.next()? {
                Event::Start(e) => return Ok(Some((e, false))),
                Event::Empty(e) => return Ok(Some((e, true))),
                Event::End(_) => return Ok(None),
                Event::Comment(_) | Event::PI(_) => {}
                Event::Text(t) if is_whitespace(&t) => {}
                Event::Text(t) => return Err(ClixmlError::unexpected_text(&lossy(&t), context)),
                Event::CData(c) => {
                    return Err(ClixmlError::unexpected_text(
                        &String::from_utf8_lossy(&c),
                        context,
                    ));
                }
                Event::GeneralRef(r) => {
                    return Err(ClixmlError::unexpected_text(
                        &format!("&{};", String::from_utf8_lossy(&r)),
                        context,
                    ));
                }
                Event::Decl(_) | Event::DocType(_) => {
                    return Err(self.xml_error("declaration inside an element"));
                }
                Event::Eof => return Err(self.xml_error("unexpected end of input")),
            }
        }
    }

    /// The text content of an element that holds no elements.
    fn text(&mut self, empty: bool, context: &'static str) -> Result<String, ClixmlError> {
        let mut text = String::new();
        if empty {
            return Ok(text);
        }
        loop {
            match self.next()? {
                Event::Text(t) => {
                    text.push_str(&t.xml10_content().map_err(|e| self.xml_error(e.to_string()))?)
                }
                Event::CData(c) => {
                    text.push_str(&c.xml10_content().map_err(|e| self.xml_error(e.to_string()))?)
                }
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref().map_err(|e| self.xml_error(e.to_string()))? {
                        Some(c) => c,
                        None => match r.as_ref() {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            b"quot" => '"',
                            b"apos" => '\'',
                            other => {
                                return Err(self.xml_error(format!(
                                    "unknown entity &{};",
                                    quote(&String::from_utf8_lossy(other))
                                )));
                            }
                        },
                    };
                    text.push(c);
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::End(_) => return Ok(text),
                Event::Start(e) | Event::Empty(e) => {
                    return Err(ClixmlError::unexpected_element(&element_name(&e), context));
                }
                Event::Decl(_) | Event::DocType(_) => {
                    return Err(self.xml_error("declaration inside an element"));
                }
                Event::Eof => return Err(self.xml_error("unexpected end of input")),
            }
        }
    }

    /// Reads up to the end of an element that must have no content but whitespace.
    fn no_content(&mut self, empty: bool, context: &'static str) -> Result<(), ClixmlError> {
        let text = self.text(empty, context)?;
        if text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
            Ok(())
        } else {
            Err(ClixmlError::unexpected_text(&text, context))
        }
    }

    /// The `N` (decoded) and `RefId` attributes.
    fn attributes(&self, e: &BytesStart<'_>) -> Result<(Option<String>, Option<String>), ClixmlError> {
        let mut name = None;
        let mut ref_id = None;
        // quick-xml's own duplicate check compares every attribute with every other one, quadratic
        // in their number; only the two attributes read here need to be unique.
        for attr in e.attributes().with_checks(false) {
            let attr = attr.map_err(|err| self.xml_error(err.to_string()))?;
            let slot = match attr.key.local_name().as_ref() {
                b"N" => &mut name,
                b"RefId" => &mut ref_id,
                _ => continue,
            };
            if slot.is_some() {
                return Err(self.xml_error("an attribute appears twice"));
            }
            let value = attr
                .unescape_value()
                .map_err(|err| self.xml_error(err.to_string()))?;
            *slot = Some(value.into_owned());
        }
        Ok((name.map(|n| decode(&n).into_owned()), ref_id))
    }

    /// Adds a reference's size to the expanded size, refusing to pass the limit.
    fn charge(&mut self, size: u64) -> Result<(), ClixmlError> {
        self.expanded = self.expanded.saturating_add(size);
        let limit = self.limits.max_expanded_bytes;
        if self.input_len.saturating_add(self.expanded) > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(ClixmlError::ExpansionLimit { limit });
        }
        Ok(())
    }

    /// Reads the value element `e` starts; returns its `N` attribute too.
    fn value(
        &mut self,
        e: &BytesStart<'_>,
        empty: bool,
        context: &'static str,
    ) -> Result<(Option<String>, PsValue), ClixmlError> {
        let (name, ref_id) = self.attributes(e)?;
        let tag = e.local_name();
        let value = match tag.as_ref() {
            b"Nil" => {
                self.no_content(empty, "<Nil>")?;
                PsValue::Nil
            }
            b"S" => PsValue::Str(self.decoded_text(empty, "<S>")?),
            b"URI" => PsValue::Uri(self.decoded_text(empty, "<URI>")?),
            b"XD" => PsValue::XmlDocument(self.decoded_text(empty, "<XD>")?),
            b"SBK" => PsValue::ScriptBlock(self.decoded_text(empty, "<SBK>")?),
            b"C" => PsValue::Char(self.number("C", empty)?),
            b"By" => PsValue::U8(self.number("By", empty)?),
            b"SB" => PsValue::I8(self.number("SB", empty)?),
            b"U16" => PsValue::U16(self.number("U16", empty)?),
            b"I16" => PsValue::I16(self.number("I16", empty)?),
            b"U32" => PsValue::U32(self.number("U32", empty)?),
            b"I32" => PsValue::I32(self.number("I32", empty)?),
            b"U64" => PsValue::U64(self.number("U64", empty)?),
            b"I64" => PsValue::I64(self.number("I64", empty)?),
            b"B" => {
                let text = self.text(empty, "<B>")?;
                match text.trim() {
                    t if t.eq_ignore_ascii_case("true") || t == "1" => PsValue::Bool(true),
                    t if t.eq_ignore_ascii_case("false") || t == "0" => PsValue::Bool(false),
                    _ => return Err(ClixmlError::invalid("B", &text, "not true or false")),
                }
            }
            b"Sg" => {
                let text = self.text(empty, "<Sg>")?;
                PsValue::Single(
                    dotnet::parse_single(&text)
                        .ok_or_else(|| ClixmlError::invalid("Sg", &text, "not a number"))?,
                )
            }
            b"Db" => {
                let text = self.text(empty, "<Db>")?;
                PsValue::Double(
                    dotnet::parse_double(&text)
                        .ok_or_else(|| ClixmlError::invalid("Db", &text, "not a number"))?,
                )
            }
            b"D" => {
                let text = self.text(empty, "<D>")?;
                PsValue::decimal(&text)?
            }
            b"DT" => PsValue::DateTime(PsDateTime::parse(&self.text(empty, "<DT>")?)?),
            b"TS" => PsValue::Duration(PsDuration::parse(&self.text(empty, "<TS>")?)?),
            b"G" => {
                let text = self.text(empty, "<G>")?;
                PsValue::Guid(
                    Uuid::parse_str(text.trim())
                        .map_err(|e| ClixmlError::invalid("G", &text, e.to_string()))?,
                )
            }
            b"Version" => PsValue::Version(PsVersion::parse(&self.text(empty, "<Version>")?)?),
            b"BA" => PsValue::Bytes(self.base64("BA", empty)?),
            b"SS" => PsValue::SecureString(SecureBytes(self.base64("SS", empty)?)),
            b"Obj" => self.object(ref_id, empty)?,
            b"Ref" => self.reference(ref_id, empty)?,
            b"PR" => self.progress_record(empty)?,
            _ => return Err(ClixmlError::unexpected_element(&element_name(e), context)),
        };
        Ok((name, value))
    }

    fn decoded_text(&mut self, empty: bool, context: &'static str) -> Result<String, ClixmlError> {
        let text = self.text(empty, context)?;
        Ok(match decode(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(decoded) => decoded,
        })
    }

    fn number<T: FromStr>(&mut self, tag: &'static str, empty: bool) -> Result<T, ClixmlError>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(empty, "a number")?;
        text.trim()
            .parse()
            .map_err(|e: T::Err| ClixmlError::invalid(tag, &text, e.to_string()))
    }

    fn base64(&mut self, tag: &'static str, empty: bool) -> Result<Vec<u8>, ClixmlError> {
        let text = self.text(empty, "base64 text")?;
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        BASE64
            .decode(compact.as_bytes())
            .map_err(|e| ClixmlError::invalid(tag, &text, e.to_string()))
    }

    /// `<Obj>`: registers it under its RefId once read.
    fn object(&mut self, ref_id: Option<String>, empty: bool) -> Result<PsValue, ClixmlError> {
        if self.open.len() >= self.limits.max_depth {
            return Err(ClixmlError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let start = self.event_start;
        let expanded_before = self.expanded;
        self.open.push(OpenObject {
            ref_id: ref_id.clone(),
            type_names: None,
            to_string: None,
        });
        let body = self.object_body(empty);
        self.open.pop();
        let obj = Arc::new(body?);
        if let Some(id) = ref_id {
            // What the element would be with its own references written out.
            let size = self.reader.buffer_position().saturating_sub(start)
                + self.expanded.saturating_sub(expanded_before);
            self.objects.insert(id, (Arc::clone(&obj), size));
        }
        Ok(PsValue::Object(obj))
    }

    fn object_body(&mut self, empty: bool) -> Result<PsObject, ClixmlError> {
        let mut obj = PsObject::default();
        if empty {
            return Ok(obj);
        }
        while let Some((e, empty)) = self.child("<Obj>")? {
            let tag = e.local_name();
            match tag.as_ref() {
                b"TN" => {
                    let start = self.event_start;
                    let (_, tn_id) = self.attributes(&e)?;
                    let mut names = Vec::new();
                    if !empty {
                        while let Some((t, empty)) = self.child("<TN>")? {
                            if t.local_name().as_ref() != b"T" {
                                return Err(ClixmlError::unexpected_element(&element_name(&t), "<TN>"));
                            }
                            names.push(self.decoded_text(empty, "<T>")?);
                        }
                    }
                    if let Some(id) = tn_id {
                        let size = self.reader.buffer_position().saturating_sub(start);
                        self.type_names.insert(id.clone(), (names.clone(), size));
                        self.set_open_type_names(id);
                    }
                    obj.type_names = names;
                }
                b"TNRef" => {
                    let (_, tn_id) = self.attributes(&e)?;
                    self.no_content(empty, "<TNRef>")?;
                    let id = tn_id.ok_or(ClixmlError::MissingAttribute {
                        element: "TNRef",
                        attribute: "RefId",
                    })?;
                    let (names, size) = match self.type_names.get(&id) {
                        Some((names, size)) => (names.clone(), *size),
                        None => return Err(ClixmlError::UnknownTypeRef(quote(&id))),
                    };
                    self.charge(size)?;
                    self.set_open_type_names(id);
                    obj.type_names = names;
                }
                b"ToString" => {
                    let s = self.decoded_text(empty, "<ToString>")?;
                    if let Some(open) = self.open.last_mut() {
                        open.to_string = Some(s.clone());
                    }
                    obj.to_string = Some(s);
                }
                b"Props" => self.properties(&mut obj.adapted, empty, "<Props>")?,
                b"MS" => self.properties(&mut obj.extended, empty, "<MS>")?,
                b"DCT" => {
                    let entries = self.dictionary(empty)?;
                    set_content(&mut obj, ObjContent::Dict(entries), "DCT")?;
                }
                other => match ListKind::from_tag(std::str::from_utf8(other).unwrap_or("")) {
                    Some(kind) => {
                        let mut items = Vec::new();
                        if !empty {
                            while let Some((item, empty)) = self.child("a list")? {
                                items.push(self.value(&item, empty, "a list")?.1);
                            }
                        }
                        set_content(&mut obj, ObjContent::List(kind, items), kind.tag())?;
                    }
                    None => {
                        let name = element_name(&e);
                        let (_, value) = self.value(&e, empty, "<Obj>")?;
                        set_content(&mut obj, ObjContent::Value(value), &name)?;
                    }
                },
            }
        }
        Ok(obj)
    }

    fn set_open_type_names(&mut self, tn_id: String) {
        if let Some(open) = self.open.last_mut() {
            open.type_names = Some(tn_id);
        }
    }

    fn properties(
        &mut self,
        props: &mut PsProperties,
        empty: bool,
        context: &'static str,
    ) -> Result<(), ClixmlError> {
        if empty {
            return Ok(());
        }
        let mut pairs: Vec<(String, PsValue)> = std::mem::take(props).into_iter().collect();
        while let Some((e, empty)) = self.child(context)? {
            let (name, value) = self.value(&e, empty, context)?;
            let name = name.ok_or(ClixmlError::MissingAttribute {
                element: "property",
                attribute: "N",
            })?;
            pairs.push((name, value));
        }
        *props = PsProperties::from_pairs(pairs);
        Ok(())
    }

    fn dictionary(&mut self, empty: bool) -> Result<Vec<(PsValue, PsValue)>, ClixmlError> {
        let mut entries = Vec::new();
        if empty {
            return Ok(entries);
        }
        while let Some((en, en_empty)) = self.child("<DCT>")? {
            if en.local_name().as_ref() != b"En" {
                return Err(ClixmlError::unexpected_element(&element_name(&en), "<DCT>"));
            }
            let mut key = None;
            let mut value = None;
            if !en_empty {
                while let Some((e, empty)) = self.child("<En>")? {
                    match self.value(&e, empty, "<En>")? {
                        (Some(n), v) if n == "Key" => key = Some(v),
                        (Some(n), v) if n == "Value" => value = Some(v),
                        _ => {
                            return Err(ClixmlError::unexpected_element(
                                &element_name(&e),
                                "<En> (not Key or Value)",
                            ));
                        }
                    }
                }
            }
            let key = key.ok_or(ClixmlError::BadDictEntry { missing: "Key" })?;
            let value = value.ok_or(ClixmlError::BadDictEntry { missing: "Value" })?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    fn reference(&mut self, ref_id: Option<String>, empty: bool) -> Result<PsValue, ClixmlError> {
        self.no_content(empty, "<Ref>")?;
        let id = ref_id.ok_or(ClixmlError::MissingAttribute {
            element: "Ref",
            attribute: "RefId",
        })?;
        if let Some((obj, size)) = self.objects.get(&id) {
            let (obj, size) = (Arc::clone(obj), *size);
            self.charge(size)?;
            return Ok(PsValue::Object(obj));
        }
        if let Some(open) = self
            .open
            .iter()
            .rev()
            .find(|o| o.ref_id.as_deref() == Some(id.as_str()))
        {
            let (type_names, size) = match open.type_names.as_ref().and_then(|id| self.type_names.get(id)) {
                Some((names, size)) => (names.clone(), *size),
                None => (Vec::new(), 0),
            };
            let to_string_size = open.to_string.as_ref().map_or(0, String::len);
            let stand_in = PsObject {
                type_names,
                to_string: open.to_string.clone(),
                ..PsObject::default()
            };
            self.charge(size.saturating_add(u64::try_from(to_string_size).unwrap_or(u64::MAX)))?;
            return Ok(stand_in.into());
        }
        Err(ClixmlError::UnknownRef(quote(&id)))
    }

    /// `<PR>`, see the module documentation.
    fn progress_record(&mut self, empty: bool) -> Result<PsValue, ClixmlError> {
        let mut props = PsProperties::new();
        if !empty {
            while let Some((e, empty)) = self.child("<PR>")? {
                let tag = e.local_name();
                let (name, value) = match tag.as_ref() {
                    b"AV" => ("Activity", PsValue::Str(self.decoded_text(empty, "<AV>")?)),
                    b"AI" => ("ActivityId", PsValue::I32(self.number("AI", empty)?)),
                    b"Nil" => {
                        self.no_content(empty, "<Nil>")?;
                        ("CurrentOperation", PsValue::Nil)
                    }
                    b"S" => ("CurrentOperation", PsValue::Str(self.decoded_text(empty, "<S>")?)),
                    b"PI" => ("ParentActivityId", PsValue::I32(self.number("PI", empty)?)),
                    b"PC" => ("PercentComplete", PsValue::I32(self.number("PC", empty)?)),
                    b"T" => ("RecordType", PsValue::Str(self.decoded_text(empty, "<T>")?)),
                    b"SR" => ("SecondsRemaining", PsValue::I32(self.number("SR", empty)?)),
                    b"SD" => (
                        "StatusDescription",
                        PsValue::Str(self.decoded_text(empty, "<SD>")?),
                    ),
                    _ => return Err(ClixmlError::unexpected_element(&element_name(&e), "<PR>")),
                };
                props.insert(name, value);
            }
        }
        Ok(PsObject {
            type_names: vec![
                "System.Management.Automation.ProgressRecord".into(),
                "System.Object".into(),
            ],
            adapted: props,
            ..PsObject::default()
        }
        .into())
    }
}

fn set_content(obj: &mut PsObject, content: ObjContent, what: &str) -> Result<(), ClixmlError> {
    if !matches!(obj.content, ObjContent::None) {
        return Err(ClixmlError::DuplicateContent { second: quote(what) });
    }
    obj.content = content;
    Ok(())
}

fn element_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

fn is_whitespace(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clixml::to_clixml;

    fn obj(v: &PsValue) -> &PsObject {
        v.as_object().expect("an object")
    }

    // Inputs below from psrpcore's tests/types/test_serializer.py (MIT licensed, (c) Jordan Borean).
    #[test]
    fn primitives_as_psrpcore_reads_them() {
        let cases: Vec<(&str, PsValue)> = vec![
            ("<B>true</B>", PsValue::Bool(true)),
            ("<B>false</B>", PsValue::Bool(false)),
            ("<By>1</By>", PsValue::U8(1)),
            ("<BA>AAECAw==</BA>", PsValue::Bytes(vec![0, 1, 2, 3])),
            ("<C>97</C>", PsValue::Char(97)),
            ("<D>1</D>", PsValue::Decimal("1".into())),
            ("<Db>1.0</Db>", PsValue::Double(1.0)),
            (
                "<TS>PT9.0269026S</TS> ",
                PsValue::Duration(PsDuration::from_ticks(90_269_026)),
            ),
            (
                "<G>00000000-0000-0000-0000-000000000000</G>",
                PsValue::Guid(Uuid::nil()),
            ),
            ("<I32>1</I32>", PsValue::I32(1)),
            ("<I16>1</I16>", PsValue::I16(1)),
            ("<I64>1</I64>", PsValue::I64(1)),
            ("<Sg>1.0</Sg>", PsValue::Single(1.0)),
            ("<SB>1</SB>", PsValue::I8(1)),
            (
                "<S>treble clef_x000A_ _x005F_x0000_ _x005F_X0000_ _xD834__xDD1E_ café</S>",
                PsValue::Str("treble clef\n _x0000_ _X0000_ \u{1D11E} café".into()),
            ),
            ("<U32>1</U32>", PsValue::U32(1)),
            ("<U16>1</U16>", PsValue::U16(1)),
            ("<U64>1</U64>", PsValue::U64(1)),
            (
                "<Version>1.2.3.4</Version>",
                PsValue::Version(PsVersion::parse("1.2.3.4").unwrap()),
            ),
            ("<S />", PsValue::Str(String::new())),
            ("<Nil />", PsValue::Nil),
        ];
        for (xml, expected) in cases {
            assert_eq!(parse(xml).unwrap(), expected, "{xml}");
        }
        let dt = parse("<DT>2008-04-11T10:42:32.2731993-07:00</DT>").unwrap();
        assert!(matches!(&dt, PsValue::DateTime(d) if d.as_str() == "2008-04-11T10:42:32.2731993-07:00"));
    }

    #[test]
    fn tolerated_variations() {
        assert_eq!(parse("\u{FEFF}<S>a</S>").unwrap(), PsValue::from("a"));
        assert_eq!(
            parse("<?xml version=\"1.0\"?>\n<!-- c --><S>a</S>\n").unwrap(),
            PsValue::from("a")
        );
        assert_eq!(
            parse("<S>a&amp;b&#x41;&#66;<![CDATA[<c>]]></S>").unwrap(),
            PsValue::from("a&bAB<c>")
        );
        assert_eq!(parse("<S>  </S>").unwrap(), PsValue::from("  "));
        assert_eq!(parse("<S>a\r\nb</S>").unwrap(), PsValue::from("a\nb"));
        assert_eq!(
            parse("<S>\u{2028}\u{85}</S>").unwrap(),
            PsValue::from("\u{2028}\u{85}")
        );
        assert_eq!(parse("<I32> 42 </I32>").unwrap(), PsValue::I32(42));
        assert_eq!(parse("<B>1</B>").unwrap(), PsValue::Bool(true));
        assert_eq!(
            parse("<BA>AA EC\nAw==</BA>").unwrap(),
            PsValue::Bytes(vec![0, 1, 2, 3])
        );
        assert_eq!(
            parse("<ps:S xmlns:ps=\"x\">a</ps:S>").unwrap(),
            PsValue::from("a")
        );
        let v = parse("<Obj RefId=\"0\">\n  <MS>\n    <S N=\"a\">x</S>\n  </MS>\n</Obj>").unwrap();
        assert_eq!(v.get("A"), Some(&PsValue::from("x")));
    }

    #[test]
    fn refs_share_and_tnrefs_resolve() {
        let xml = "<Obj RefId=\"0\"><TN RefId=\"0\"><T>System.Object[]</T></TN><LST>\
                   <Obj RefId=\"1\"><TN RefId=\"1\"><T>A</T><T>System.Object</T></TN><ToString>a</ToString></Obj>\
                   <Obj RefId=\"2\"><TNRef RefId=\"1\" /></Obj>\
                   <Ref RefId=\"1\" /></LST></Obj>";
        let v = parse(xml).unwrap();
        let items = v.as_list().unwrap();
        assert_eq!(obj(&items[1]).type_names, ["A", "System.Object"]);
        match (&items[0], &items[2]) {
            (PsValue::Object(a), PsValue::Object(b)) => assert!(Arc::ptr_eq(a, b)),
            other => panic!("{other:?}"),
        }
        // Written again, the shared object is a <Ref> again: the same text.
        assert_eq!(to_clixml(&v), xml);
    }

    #[test]
    fn a_cycle_becomes_a_stand_in() {
        let xml = "<Obj RefId=\"0\"><TN RefId=\"0\"><T>Node</T></TN><ToString>n</ToString>\
                   <MS><Ref N=\"Self\" RefId=\"0\" /></MS></Obj>";
        let v = parse(xml).unwrap();
        let inner = obj(v.get("self").unwrap());
        assert_eq!(inner.type_names, ["Node"]);
        assert_eq!(inner.to_string.as_deref(), Some("n"));
        assert!(!inner.has_properties());
    }

    #[test]
    fn progress_record_element() {
        // pypsrp tests/data/test_sanitise_clixml_with_error.xml (MIT licensed): `pwsh -OutputFormat
        // xml` output, pretty-printed, with the stream attribute and the #< CLIXML line.
        let xml = "#< CLIXML\r\n<Objs xmlns=\"http://schemas.microsoft.com/powershell/2004/04\" Version=\"1.1.0.1\">\n\
            <Obj S=\"progress\" RefId=\"0\">\n    <TN RefId=\"0\">\n        <T>System.Management.Automation.PSCustomObject</T>\n\
            <T>System.Object</T>\n    </TN>\n    <MS>\n        <I64 N=\"SourceId\">1</I64>\n        <PR N=\"Record\">\n\
            <AV>Preparing modules for first use.</AV>\n            <AI>0</AI>\n            <Nil/>\n            <PI>-1</PI>\n\
            <PC>-1</PC>\n            <T>Completed</T>\n            <SR>-1</SR>\n            <SD>\n            </SD>\n\
            </PR>\n    </MS>\n</Obj>\n<Obj S=\"progress\" RefId=\"1\">\n    <TNRef RefId=\"0\"/>\n    <MS>\n\
            <I64 N=\"SourceId\">1</I64>\n        <PR N=\"Record\">\n            <AV>Preparing modules for first use.</AV>\n\
            <AI>0</AI>\n            <Nil/>\n            <PI>-1</PI>\n            <PC>-1</PC>\n            <T>Completed</T>\n\
            <SR>-1</SR>\n            <SD>\n            </SD>\n        </PR>\n    </MS>\n</Obj>\n\
            <S S=\"Error\">fake : The term 'fake' is not recognized as the name of a cmdlet, function, script file, or operable program. Check _x000D__x000A_</S>\n\
            <S S=\"Error\">At line:1 char:1_x000D__x000A_</S>\n</Objs>";
        let values = parse_document(xml).unwrap();
        assert_eq!(values.len(), 4);
        let record = obj(values[1].get("Record").unwrap());
        assert!(record.is("System.Management.Automation.ProgressRecord"));
        assert_eq!(
            record.get("activity"),
            Some(&PsValue::from("Preparing modules for first use."))
        );
        assert_eq!(record.get("RecordType"), Some(&PsValue::from("Completed")));
        assert_eq!(record.get("ParentActivityId"), Some(&PsValue::I32(-1)));
        assert_eq!(record.get("CurrentOperation"), Some(&PsValue::Nil));
        assert_eq!(obj(&values[1]).type_names, obj(&values[0]).type_names);
        assert_eq!(values[3], PsValue::from("At line:1 char:1\r\n"));
        assert_eq!(parse_document("<Objs />").unwrap(), Vec::<PsValue>::new());
    }

    #[test]
    fn malformed_input_is_an_error() {
        type Check = fn(&ClixmlError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, ClixmlError::Empty)),
            ("  <!-- -->  ", |e| matches!(e, ClixmlError::Empty)),
            ("<bad>test</bad>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            ("<S>a</S><S>b</S>", |e| {
                matches!(e, ClixmlError::TrailingContent { .. })
            }),
            ("<S>a</S>junk", |e| {
                matches!(e, ClixmlError::TrailingContent { .. })
            }),
            ("junk<S>a</S>", |e| {
                matches!(e, ClixmlError::UnexpectedText { .. })
            }),
            ("<S>a", |e| matches!(e, ClixmlError::Xml { .. })),
            ("<S>a</I32>", |e| matches!(e, ClixmlError::Xml { .. })),
            ("<S>&foo;</S>", |e| matches!(e, ClixmlError::Xml { .. })),
            ("<S>&#0;</S>", |e| matches!(e, ClixmlError::Xml { .. })),
            ("<!DOCTYPE x [<!ENTITY a \"b\">]><S>&a;</S>", |e| {
                matches!(e, ClixmlError::DocType)
            }),
            ("<S><S>a</S></S>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            ("<I32>1.5</I32>", |e| {
                matches!(e, ClixmlError::InvalidValue { element: "I32", .. })
            }),
            ("<By>256</By>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<B>yes</B>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<Db>x</Db>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<D>1e5</D>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<TS>invalid</TS>", |e| {
                matches!(e, ClixmlError::InvalidValue { element: "TS", .. })
            }),
            ("<DT>yesterday</DT>", |e| {
                matches!(e, ClixmlError::InvalidValue { element: "DT", .. })
            }),
            ("<G>nope</G>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<BA>!!</BA>", |e| matches!(e, ClixmlError::InvalidValue { .. })),
            ("<Version>1</Version>", |e| {
                matches!(e, ClixmlError::InvalidValue { .. })
            }),
            ("<Nil>x</Nil>", |e| {
                matches!(e, ClixmlError::UnexpectedText { .. })
            }),
            ("<Ref RefId=\"9\" />", |e| matches!(e, ClixmlError::UnknownRef(_))),
            ("<Ref />", |e| matches!(e, ClixmlError::MissingAttribute { .. })),
            ("<Obj><TNRef RefId=\"0\" /></Obj>", |e| {
                matches!(e, ClixmlError::UnknownTypeRef(_))
            }),
            ("<Obj><TN><X/></TN></Obj>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            ("<Obj><MS><S>no name</S></MS></Obj>", |e| {
                matches!(e, ClixmlError::MissingAttribute { .. })
            }),
            ("<Obj><I32>1</I32><S>2</S></Obj>", |e| {
                matches!(e, ClixmlError::DuplicateContent { .. })
            }),
            ("<Obj><LST /><DCT /></Obj>", |e| {
                matches!(e, ClixmlError::DuplicateContent { .. })
            }),
            ("<Obj>text</Obj>", |e| {
                matches!(e, ClixmlError::UnexpectedText { .. })
            }),
            ("<Obj><Foo /></Obj>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            ("<Obj><LST><T>x</T></LST></Obj>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            ("<Obj><DCT><S>x</S></DCT></Obj>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
            // Cases from psrpcore's test_fail_deserialize_dict_no_key/no_value (MIT).
            (
                "<Obj RefId=\"0\"><TN RefId=\"0\"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>\
                 <DCT><En><S N=\"NotKey\">1</S><S N=\"Value\">test</S></En></DCT></Obj>",
                |e| matches!(e, ClixmlError::UnexpectedElement { .. }),
            ),
            ("<Obj><DCT><En><S N=\"Key\">1</S></En></DCT></Obj>", |e| {
                matches!(e, ClixmlError::BadDictEntry { missing: "Value" })
            }),
            ("<Obj><DCT><En><S N=\"Value\">1</S></En></DCT></Obj>", |e| {
                matches!(e, ClixmlError::BadDictEntry { missing: "Key" })
            }),
            ("<Obj N=\"a\" N=\"b\" />", |e| {
                matches!(e, ClixmlError::Xml { .. })
            }),
            ("<Objs><S>a</S></Objs>", |e| {
                matches!(e, ClixmlError::UnexpectedElement { .. })
            }),
        ];
        for (xml, check) in cases {
            match parse(xml) {
                Err(e) => assert!(check(&e), "{xml}: {e:?}"),
                Ok(v) => panic!("{xml} parsed: {v:?}"),
            }
        }
        assert!(matches!(
            parse_document("<S>a</S>"),
            Err(ClixmlError::UnexpectedElement { .. })
        ));
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| format!("{}{}", "<Obj><LST>".repeat(n), "</LST></Obj>".repeat(n));
        assert!(parse(&nested(64)).is_ok());
        assert_eq!(parse(&nested(65)), Err(ClixmlError::TooDeep { limit: 64 }));
        // Far deeper than any stack: refused at the limit, without recursing further.
        assert_eq!(parse(&nested(100_000)), Err(ClixmlError::TooDeep { limit: 64 }));
        let props = |n: usize| {
            format!(
                "<Obj><MS>{}<S N=\"x\">y</S>{}</MS></Obj>",
                "<Obj N=\"a\"><MS>".repeat(n),
                "</MS></Obj>".repeat(n)
            )
        };
        assert_eq!(parse(&props(63)).err(), None);
        assert_eq!(parse(&props(64)).err(), Some(ClixmlError::TooDeep { limit: 64 }));
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(parse_with_limits(&nested(2), &limits).is_ok());
        assert!(parse_with_limits(&nested(3), &limits).is_err());
    }

    #[test]
    fn size_limits() {
        let limits = Limits {
            max_input_bytes: 12,
            ..Limits::default()
        };
        assert!(parse_with_limits("<S>12345</S>", &limits).is_ok());
        assert_eq!(
            parse_with_limits("<S>123456</S>", &limits),
            Err(ClixmlError::InputTooLarge { size: 13, limit: 12 })
        );
    }

    /// Each level holds two references to the level below: written out, 2^40 copies of the leaf.
    fn exponential_refs(levels: usize) -> String {
        let mut xml = String::from("<Obj RefId=\"root\"><LST><Obj RefId=\"0\"><S>leaf</S></Obj>");
        for i in 1..=levels {
            xml.push_str(&format!(
                "<Obj RefId=\"{i}\"><LST><Ref RefId=\"{p}\" /><Ref RefId=\"{p}\" /></LST></Obj>",
                p = i - 1
            ));
        }
        xml.push_str("</LST></Obj>");
        xml
    }

    #[test]
    fn reference_bombs_are_refused() {
        assert!(parse(&exponential_refs(10)).is_ok());
        assert!(matches!(
            parse(&exponential_refs(40)),
            Err(ClixmlError::ExpansionLimit { .. })
        ));
        // The same with type names: a large TN referenced many times.
        let mut xml = format!(
            "<Obj><LST><Obj><TN RefId=\"0\"><T>{}</T></TN></Obj>",
            "x".repeat(1 << 20)
        );
        for _ in 0..500 {
            xml.push_str("<Obj><TNRef RefId=\"0\" /></Obj>");
        }
        xml.push_str("</LST></Obj>");
        let limits = Limits {
            max_expanded_bytes: 100 << 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse_with_limits(&xml, &limits),
            Err(ClixmlError::ExpansionLimit { .. })
        ));
    }

    #[test]
    fn many_properties_take_linear_time() {
        // 200,000 properties, every name twice (the second in upper case): a quadratic duplicate
        // check would take minutes.
        let mut xml = String::from("<Obj><MS>");
        for i in 0..100_000 {
            xml.push_str(&format!("<I32 N=\"p{i}\">1</I32><I32 N=\"P{i}\">2</I32>"));
        }
        xml.push_str("</MS></Obj>");
        let started = std::time::Instant::now();
        let v = parse(&xml).unwrap();
        let o = obj(&v);
        assert_eq!(o.extended.len(), 100_000);
        assert_eq!(o.extended.get("p99999"), Some(&PsValue::I32(2)));
        assert_eq!(o.extended.names().next(), Some("p0"));
        assert_eq!(o.properties().count(), 100_000);
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }

    #[test]
    fn many_attributes_take_linear_time() {
        let attrs: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
        let started = std::time::Instant::now();
        assert_eq!(
            parse(&format!("<S{attrs} N=\"x\">v</S>")).unwrap(),
            PsValue::from("v")
        );
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        assert!(matches!(
            parse("<S RefId=\"1\" RefId=\"2\">v</S>"),
            Err(ClixmlError::Xml { .. })
        ));
    }

    #[test]
    fn huge_counts_are_just_large() {
        // A long flat list is fine (no recursion per item).
        let xml = format!("<Obj><LST>{}</LST></Obj>", "<I32>1</I32>".repeat(100_000));
        assert_eq!(
            parse(&xml).unwrap().as_list().map(<[PsValue]>::len),
            Some(100_000)
        );
        // A number too large for its type is an error, not a wrap.
        assert!(parse("<I64>99999999999999999999999999</I64>").is_err());
        assert!(parse("<TS>P99999999999999999999999D</TS>").is_err());
    }
}
