//! A small namespace-resolved element tree over quick-xml, and a writer.
//!
//! Envelopes are small (MaxEnvelopeSize, 150 KiB to 500 KiB in practice), so responses are read
//! into a tree first and then picked apart by namespace URI and local name. The reader never
//! panics on remote data: depth is bounded, unknown prefixes and entities are errors.

use quick_xml::NsReader;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use thiserror::Error;

/// How deep elements may nest in a response; a SOAP envelope needs fewer than 15 levels.
pub const MAX_DEPTH: usize = 64;

/// The input is not well-formed XML, or not the XML this layer reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

/// An attribute, with the namespace of its prefix (unprefixed attributes have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Option<String>,
    pub name: String,
    pub value: String,
}

/// An element: its namespace URI and local name, attributes (namespace declarations left out),
/// child elements, and its own text (character data directly inside it, concatenated).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// All children `{ns}name`.
    pub fn children<'a>(&'a self, ns: &'a str, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The trimmed text of the first child `{ns}name`.
    pub fn child_text(&self, ns: &str, name: &str) -> Option<&str> {
        self.child(ns, name).map(|c| c.text.trim())
    }

    /// The first element `{ns}name` in document order below this one (this one excluded).
    pub fn descendant(&self, ns: &str, name: &str) -> Option<&Element> {
        for child in &self.children {
            if child.is(ns, name) {
                return Some(child);
            }
            if let Some(found) = child.descendant(ns, name) {
                return Some(found);
            }
        }
        None
    }

    /// The value of the unprefixed attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute `{ns}name`.
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// All text below this element, in document order, pieces trimmed and joined by a space.
    pub fn deep_text(&self) -> String {
        fn walk(e: &Element, out: &mut Vec<String>) {
            let t = e.text.trim();
            if !t.is_empty() {
                out.push(t.to_string());
            }
            for c in &e.children {
                walk(c, out);
            }
        }
        let mut parts = Vec::new();
        walk(self, &mut parts);
        parts.join(" ")
    }
}

fn ns_of(result: ResolveResult<'_>, what: &str) -> Result<Option<String>, XmlError> {
    match result {
        ResolveResult::Bound(ns) => Ok(Some(String::from_utf8_lossy(ns.as_ref()).into_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(XmlError(format!(
            "{what} uses the undeclared prefix {:?}",
            String::from_utf8_lossy(&prefix)
        ))),
    }
}

fn open(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let (ns, local) = reader.resolve_element(start.name());
    let name = String::from_utf8_lossy(local.as_ref()).into_owned();
    let ns = ns_of(ns, "an element")?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError(e.to_string()))?;
        let key = attr.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            continue;
        }
        let (ans, alocal) = reader.resolve_attribute(attr.key);
        let ns = if key.starts_with(b"xml:") {
            Some(super::namespaces::XML.to_string())
        } else {
            ns_of(ans, "an attribute")?
        };
        let value = attr
            .unescape_value()
            .map_err(|e| XmlError(e.to_string()))?
            .into_owned();
        attrs.push(Attr {
            ns,
            name: String::from_utf8_lossy(alocal.as_ref()).into_owned(),
            value,
        });
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses a document into its root element. A UTF-8 byte order mark is skipped; other encodings
/// are refused (WinRM speaks UTF-8 unless a client asks otherwise, and this one does not).
pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| XmlError(format!("not UTF-8: {e}")))?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => return Err(XmlError(format!("{e} at byte {}", reader.buffer_position()))),
        };
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err(XmlError("content after the root element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError(format!("elements nest deeper than {MAX_DEPTH}")));
                }
                let element = open(&reader, &start)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                if root.is_some() {
                    return Err(XmlError("content after the root element".into()));
                }
                let element = open(&reader, &start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let element = stack.pop().ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(t) => {
                let t = t.xml10_content().map_err(|e| XmlError(e.to_string()))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&t),
                    None if t.trim().is_empty() => {}
                    None => return Err(XmlError("text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let c = c.xml10_content().map_err(|e| XmlError(e.to_string()))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&c),
                    None => return Err(XmlError("CDATA outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| XmlError(e.to_string()))? {
                    Some(c) => c,
                    None => match r.as_ref() {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        other => {
                            return Err(XmlError(format!(
                                "unknown entity &{};",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    },
                };
                match stack.last_mut() {
                    Some(top) => top.text.push(c),
                    None => return Err(XmlError("a reference outside the root element".into())),
                }
            }
            Event::DocType(_) => return Err(XmlError("a DOCTYPE is not allowed in SOAP".into())),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError(format!("{} elements not closed", stack.len())));
    }
    root.ok_or_else(|| XmlError("no root element".into()))
}

/// Writes XML with quick-xml: element names are written as given (with their prefix), attribute
/// values and text are escaped.
pub struct XmlWriter {
    writer: quick_xml::Writer<Vec<u8>>,
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        XmlWriter {
            writer: quick_xml::Writer::new(Vec::with_capacity(2048)),
        }
    }

    fn write(&mut self, event: Event<'_>) {
        // Writing into a Vec<u8> cannot fail: its io::Write never returns an error.
        let _ = self.writer.write_event(event);
    }

    fn start_tag<'a>(name: &'a str, attrs: &[(&'a str, &'a str)]) -> BytesStart<'a> {
        let mut start = BytesStart::new(name);
        for attr in attrs {
            start.push_attribute(*attr);
        }
        start
    }

    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.write(Event::Start(Self::start_tag(name, attrs)));
    }

    pub fn end(&mut self, name: &str) {
        self.write(Event::End(BytesEnd::new(name)));
    }

    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.write(Event::Empty(Self::start_tag(name, attrs)));
    }

    pub fn text(&mut self, text: &str) {
        self.write(Event::Text(BytesText::new(text)));
    }

    /// `<name attrs>text</name>`, or `<name attrs/>` when the text is empty.
    pub fn element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        if text.is_empty() {
            self.empty(name, attrs);
        } else {
            self.start(name, attrs);
            self.text(text);
            self.end(name);
        }
    }

    /// `<name attrs>text</name>`, also when the text is empty: payload elements, so an envelope
    /// built with an empty payload measures what a full one adds around its text.
    pub fn element_full(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(name, attrs);
        self.text(text);
        self.end(name);
    }

    pub fn finish(self) -> Vec<u8> {
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_namespaces_not_prefixes() {
        let doc = br#"<a:Env xmlns:a="urn:x" xmlns:b="urn:y"><b:Item b:k="1" k="&lt;2&gt;">t&amp;u<![CDATA[<v>]]></b:Item><Item xmlns="urn:x"/></a:Env>"#;
        let root = parse(doc).unwrap();
        assert!(root.is("urn:x", "Env"));
        let item = root.child("urn:y", "Item").unwrap();
        assert_eq!(item.text, "t&u<v>");
        assert_eq!(item.attr("k"), Some("<2>"));
        assert_eq!(item.attr_ns("urn:y", "k"), Some("1"));
        assert!(root.child("urn:x", "Item").is_some());
    }

    #[test]
    fn refuses_what_is_not_a_document() {
        for bad in [
            &b""[..],
            b"<a>",
            b"<a></b>",
            b"<p:a/>",
            b"<a/><b/>",
            b"text",
            b"<a>&custom;</a>",
            b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>",
            b"\xff\xfe<\x00a\x00/\x00>\x00",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).unwrap_err().0.contains("deeper"));
    }

    #[test]
    fn writer_escapes_text_and_attributes() {
        let mut w = XmlWriter::new();
        w.start("r", &[("a", "\"<&>'")]);
        w.element("t", &[], "<&>\"'");
        w.element("e", &[], "");
        w.end("r");
        let bytes = w.finish();
        let root = parse(&bytes).unwrap();
        assert_eq!(root.attr("a"), Some("\"<&>'"));
        assert_eq!(root.children[0].text, "<&>\"'");
        assert_eq!(String::from_utf8_lossy(&bytes).matches("<e/>").count(), 1);
    }
}
