//! Output objects as JSON and as the text PowerShell's default formatter would show.
//!
//! # JSON ([`to_json`])
//! - `$null` is `null`; booleans and integers are JSON booleans and numbers; `Single` and `Double`
//!   are numbers (a `Single` by its shortest decimal form, so `0.1` stays `0.1`), `NaN` and the
//!   infinities the strings `"NaN"`, `"Infinity"`, `"-Infinity"`; a `Decimal` is a number when it has
//!   at most 15 significant digits (exact in a double) and its text otherwise;
//! - strings, URIs, script blocks and XML documents are strings; a `Char` is a one-character string;
//!   a `DateTime` is its ISO 8601 text as sent (`2018-06-13T23:46:28.00516+00:00`); a `TimeSpan` its
//!   ISO 8601 duration (`PT9.0269026S`); a GUID its hyphenated text; a `Version` `1.2.3.4`; a byte
//!   array its base64 text;
//! - a SecureString is never revealed: it is the string `"System.Security.SecureString"`;
//! - lists (all four kinds) are arrays; dictionaries are objects, keys turned into text as
//!   [`to_text`] turns a table cell (a later duplicate key wins; key order is that of
//!   `serde_json::Map`);
//! - an object wrapping a value (an enum, a string with notes) is that value, as PowerShell's
//!   `ConvertTo-Json` writes an enum as its number;
//! - an object with properties is an object of its properties (extended ones first; an extended
//!   property hides an adapted one of the same name);
//! - any other object is its `ToString` text, or `{}` when it has none.
//!
//! # Text ([`to_text`])
//! A small copy of what `Out-Default` shows for objects without format data, without the blank
//! lines PowerShell puts around tables and lists and without a console width (nothing is cut to
//! fit). Widths count characters, not terminal cells.
//! - `$null` is empty; a string is itself; `True`/`False`; numbers in .NET's invariant form (`1.5`,
//!   `1E+15`, `NaN`, `Infinity`); a `DateTime` as `"$date"` shows it, `MM/dd/yyyy HH:mm:ss` (the
//!   invariant culture; PowerShell's console would use the host's culture and long format), in the
//!   clock time it was sent with; a `TimeSpan` as `[-][d.]hh:mm:ss[.fffffff]`; a GUID hyphenated; a
//!   SecureString `System.Security.SecureString`;
//! - a list or a byte array is enumerated, as the pipeline does: each item is shown in turn, nested
//!   lists flattened; consecutive objects shown by their properties with the same property names
//!   share one table (or are listed one after the other);
//! - a dictionary is PowerShell's `Name  Value` table: a 30-character `Name` column (longer keys are
//!   cut to 27 characters and `...`), then the value;
//! - an object with properties, and no list, dictionary or wrapped value, is a table when it has at
//!   most 4 properties and a list (`Name : Value`, names padded to the longest) with 5 or more, as
//!   PowerShell picks for objects without format data. In a table, a column whose first value is a
//!   number is right-aligned, header included, and the underline is as long as the header; a cell
//!   shows the first line of its value, followed by `...` when there are more;
//! - inside a table cell or a list value, a list shows as `{a, b, c, d...}` (at most 4 items, as
//!   `$FormatEnumerationLimit`), a dictionary as `{[k, v], ...}` (PowerShell 7's form), an object by
//!   its `ToString`, or, with none, a PSCustomObject-like `@{a=1; b=2}`;
//! - an error record is its message ([`ErrorRecord`]); a warning, verbose or debug record
//!   `WARNING: message` (`VERBOSE:`, `DEBUG:`); an information record its message;
//! - any other object (an enum, a string with notes, an object without properties) is its
//!   `ToString`, or its wrapped value's text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value as Json};

use super::dotnet;
use super::records::{ErrorRecord, InformationRecord, InformationalKind, InformationalRecord};
use super::value::{ObjContent, PsObject, PsValue};

/// What a SecureString shows as, in JSON and in text.
pub const SECURE_STRING_PLACEHOLDER: &str = "System.Security.SecureString";

/// `$FormatEnumerationLimit`: items of a collection shown inside a cell.
const ENUMERATION_LIMIT: usize = 4;
/// Width of a hashtable's `Name` column.
const NAME_COLUMN: usize = 30;

/// The value as JSON (see the module documentation).
pub fn to_json(value: &PsValue) -> Json {
    match value {
        PsValue::Nil => Json::Null,
        PsValue::Str(s) | PsValue::Uri(s) | PsValue::XmlDocument(s) | PsValue::ScriptBlock(s) => {
            Json::String(s.clone())
        }
        PsValue::Char(c) => Json::String(char_text(*c)),
        PsValue::Bool(b) => Json::Bool(*b),
        PsValue::U8(v) => Json::from(*v),
        PsValue::I8(v) => Json::from(*v),
        PsValue::U16(v) => Json::from(*v),
        PsValue::I16(v) => Json::from(*v),
        PsValue::U32(v) => Json::from(*v),
        PsValue::I32(v) => Json::from(*v),
        PsValue::U64(v) => Json::from(*v),
        PsValue::I64(v) => Json::from(*v),
        PsValue::Single(v) => {
            float_json(dotnet::parse_double(&dotnet::format_single(*v)).unwrap_or(f64::from(*v)))
        }
        PsValue::Double(v) => float_json(*v),
        PsValue::Decimal(text) => decimal_json(text),
        PsValue::DateTime(dt) => Json::String(dt.as_str().to_owned()),
        PsValue::Duration(d) => Json::String(d.to_string()),
        PsValue::Bytes(b) => Json::String(BASE64.encode(b)),
        PsValue::Guid(g) => Json::String(g.hyphenated().to_string()),
        PsValue::Version(v) => Json::String(v.to_string()),
        PsValue::SecureString(_) => Json::String(SECURE_STRING_PLACEHOLDER.to_owned()),
        PsValue::Object(obj) => object_json(obj),
    }
}

fn float_json(v: f64) -> Json {
    match Number::from_f64(v) {
        Some(n) => Json::Number(n),
        None if v.is_nan() => Json::String("NaN".into()),
        None if v > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

fn decimal_json(text: &str) -> Json {
    if let Ok(i) = text.parse::<i64>() {
        return Json::from(i);
    }
    let significant = text.trim_start_matches(['-', '+']).trim_start_matches(['0', '.']);
    let digits = significant.bytes().filter(u8::is_ascii_digit).count();
    match text.parse::<f64>() {
        Ok(f) if digits <= 15 => float_json(f),
        _ => Json::String(text.to_owned()),
    }
}

fn object_json(obj: &PsObject) -> Json {
    match &obj.content {
        ObjContent::List(_, items) => Json::Array(items.iter().map(to_json).collect()),
        ObjContent::Dict(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(inline_text(k), to_json(v));
            }
            Json::Object(map)
        }
        ObjContent::Value(v) => to_json(v),
        ObjContent::None if obj.has_properties() => {
            let mut map = Map::new();
            for (name, v) in obj.properties() {
                map.insert(name.to_owned(), to_json(v));
            }
            Json::Object(map)
        }
        ObjContent::None => match &obj.to_string {
            Some(s) => Json::String(s.clone()),
            None => Json::Object(Map::new()),
        },
    }
}

fn char_text(c: u16) -> String {
    char::from_u32(u32::from(c))
        .unwrap_or(char::REPLACEMENT_CHARACTER)
        .to_string()
}

/// The value as PowerShell's default formatter would show it (see the module documentation).
pub fn to_text(value: &PsValue) -> String {
    let mut leaves = Vec::new();
    flatten(value, &mut leaves);
    let mut blocks: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < leaves.len() {
        let leaf = leaves[i];
        match property_object(leaf) {
            Some(first) => {
                let names: Vec<&str> = first.properties().map(|(n, _)| n).collect();
                let mut group = vec![first];
                while let Some(next) = leaves.get(i + group.len()).and_then(|v| property_object(v)) {
                    if !next.properties().map(|(n, _)| n).eq(names.iter().copied()) {
                        break;
                    }
                    group.push(next);
                }
                i += group.len();
                if names.len() <= 4 {
                    blocks.push(Block::framed(table(&names, &group)));
                } else {
                    for obj in group {
                        blocks.push(Block::framed(list(obj)));
                    }
                }
            }
            None => {
                i += 1;
                blocks.push(single(leaf));
            }
        }
    }
    let mut out = String::new();
    for (n, block) in blocks.iter().enumerate() {
        if n > 0 {
            out.push('\n');
            if block.framed || blocks[n - 1].framed {
                out.push('\n');
            }
        }
        out.push_str(&block.text);
    }
    out
}

struct Block {
    text: String,
    /// Tables and lists, which PowerShell sets apart with blank lines.
    framed: bool,
}

impl Block {
    fn framed(text: String) -> Block {
        Block { text, framed: true }
    }

    fn plain(text: String) -> Block {
        Block { text, framed: false }
    }
}

/// Enumerates lists (and byte arrays) as the pipeline does, depth first.
fn flatten<'v>(value: &'v PsValue, out: &mut Vec<&'v PsValue>) {
    match value {
        PsValue::Object(obj) => match &obj.content {
            ObjContent::List(_, items) => {
                for item in items {
                    flatten(item, out);
                }
            }
            _ => out.push(value),
        },
        _ => out.push(value),
    }
}

/// The object, if it is shown by its properties.
fn property_object(value: &PsValue) -> Option<&PsObject> {
    let obj = value.as_object()?;
    let shown_by_properties =
        matches!(obj.content, ObjContent::None) && obj.has_properties() && special(obj).is_none();
    shown_by_properties.then_some(obj)
}

/// The text of the records PowerShell shows in their own way.
fn special(obj: &PsObject) -> Option<String> {
    if obj.is("System.Management.Automation.ErrorRecord") {
        return Some(ErrorRecord::from_object(obj).to_string());
    }
    if obj.is("System.Management.Automation.InformationalRecord") {
        let record = InformationalRecord::from_object(obj);
        let prefix = match record.kind {
            Some(InformationalKind::Warning) => "WARNING: ",
            Some(InformationalKind::Verbose) => "VERBOSE: ",
            Some(InformationalKind::Debug) => "DEBUG: ",
            None => "",
        };
        return Some(format!("{prefix}{}", record.message));
    }
    if obj.is("System.Management.Automation.InformationRecord") {
        return Some(InformationRecord::from_object(obj).message());
    }
    None
}

fn single(value: &PsValue) -> Block {
    match value {
        PsValue::Bytes(bytes) => Block::plain(bytes.iter().map(u8::to_string).collect::<Vec<_>>().join("\n")),
        PsValue::Object(obj) => {
            if let Some(text) = special(obj) {
                return Block::plain(text);
            }
            match &obj.content {
                ObjContent::Dict(entries) if entries.is_empty() => Block::plain(String::new()),
                ObjContent::Dict(entries) => Block::framed(dictionary_table(entries)),
                ObjContent::Value(v) => Block::plain(obj.to_string.clone().unwrap_or_else(|| inline_text(v))),
                _ => Block::plain(obj.to_string.clone().unwrap_or_default()),
            }
        }
        other => Block::plain(inline_text(other)),
    }
}

/// A value as one piece of text: a scalar's display form, or an object as a table cell shows it.
pub(crate) fn inline_text(value: &PsValue) -> String {
    match value {
        PsValue::Nil => String::new(),
        PsValue::Str(s) | PsValue::Uri(s) | PsValue::XmlDocument(s) | PsValue::ScriptBlock(s) => s.clone(),
        PsValue::Decimal(s) => s.clone(),
        PsValue::Char(c) => char_text(*c),
        PsValue::Bool(true) => "True".into(),
        PsValue::Bool(false) => "False".into(),
        PsValue::U8(v) => v.to_string(),
        PsValue::I8(v) => v.to_string(),
        PsValue::U16(v) => v.to_string(),
        PsValue::I16(v) => v.to_string(),
        PsValue::U32(v) => v.to_string(),
        PsValue::I32(v) => v.to_string(),
        PsValue::U64(v) => v.to_string(),
        PsValue::I64(v) => v.to_string(),
        PsValue::Single(v) => display_float(f64::from(*v), dotnet::format_single(*v)),
        PsValue::Double(v) => display_float(*v, dotnet::format_double(*v)),
        PsValue::DateTime(dt) => dotnet::display_datetime(dt.civil()),
        PsValue::Duration(d) => dotnet::display_duration(d.ticks()),
        PsValue::Bytes(b) => enumeration(b.iter().map(u8::to_string), b.len()),
        PsValue::Guid(g) => g.hyphenated().to_string(),
        PsValue::Version(v) => v.to_string(),
        PsValue::SecureString(_) => SECURE_STRING_PLACEHOLDER.into(),
        PsValue::Object(obj) => object_inline(obj),
    }
}

fn display_float(v: f64, text: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        text
    }
}

fn enumeration(items: impl Iterator<Item = String>, count: usize) -> String {
    let shown: Vec<String> = items.take(ENUMERATION_LIMIT).collect();
    let more = if count > ENUMERATION_LIMIT { "..." } else { "" };
    format!("{{{}{more}}}", shown.join(", "))
}

fn object_inline(obj: &PsObject) -> String {
    match &obj.content {
        ObjContent::List(_, items) => enumeration(items.iter().map(inline_text), items.len()),
        ObjContent::Dict(entries) => enumeration(
            entries
                .iter()
                .map(|(k, v)| format!("[{}, {}]", inline_text(k), inline_text(v))),
            entries.len(),
        ),
        ObjContent::Value(v) => obj.to_string.clone().unwrap_or_else(|| inline_text(v)),
        ObjContent::None => match &obj.to_string {
            Some(s) => s.clone(),
            None if obj.has_properties() => {
                let parts: Vec<String> = obj
                    .properties()
                    .map(|(n, v)| format!("{n}={}", inline_text(v)))
                    .collect();
                format!("@{{{}}}", parts.join("; "))
            }
            None => obj.type_names.first().cloned().unwrap_or_default(),
        },
    }
}

/// A cell's text: its first line, and `...` when more lines follow.
fn cell(value: &PsValue) -> String {
    let text = inline_text(value);
    match text.split_once('\n') {
        Some((first, _)) => format!("{}...", first.trim_end_matches('\r')),
        None => text,
    }
}

fn is_number(value: &PsValue) -> bool {
    matches!(
        value,
        PsValue::U8(_)
            | PsValue::I8(_)
            | PsValue::U16(_)
            | PsValue::I16(_)
            | PsValue::U32(_)
            | PsValue::I32(_)
            | PsValue::U64(_)
            | PsValue::I64(_)
            | PsValue::Single(_)
            | PsValue::Double(_)
            | PsValue::Decimal(_)
    )
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(out: &mut String, text: &str, width_: usize, right: bool) {
    let fill = width_.saturating_sub(width(text));
    if right {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(text);
    } else {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', fill));
    }
}

/// Joins lines, without the trailing spaces padding leaves.
fn lines(rows: Vec<String>) -> String {
    rows.iter().map(|r| r.trim_end()).collect::<Vec<_>>().join("\n")
}

fn table(names: &[&str], objects: &[&PsObject]) -> String {
    let cells: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            names
                .iter()
                .map(|n| o.get(n).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let right: Vec<bool> = names
        .iter()
        .map(|n| objects.first().and_then(|o| o.get(n)).is_some_and(is_number))
        .collect();
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(c, n)| {
            cells
                .iter()
                .map(|row| width(&row[c]))
                .chain([width(n)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut rows = Vec::new();
    let header_line = |texts: &dyn Fn(usize) -> String| {
        let mut line = String::new();
        for c in 0..names.len() {
            if c > 0 {
                line.push(' ');
            }
            pad(&mut line, &texts(c), widths[c], right[c]);
        }
        line
    };
    rows.push(header_line(&|c| names[c].to_owned()));
    rows.push(header_line(&|c| "-".repeat(width(names[c]))));
    for row in &cells {
        rows.push(header_line(&|c| row[c].clone()));
    }
    lines(rows)
}

fn list(obj: &PsObject) -> String {
    let name_width = obj.properties().map(|(n, _)| width(n)).max().unwrap_or(0);
    let mut rows = Vec::new();
    for (name, value) in obj.properties() {
        let text = inline_text(value);
        let mut value_lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let mut line = String::new();
        pad(&mut line, name, name_width, false);
        line.push_str(" : ");
        line.push_str(value_lines.next().unwrap_or(""));
        rows.push(line);
        for more in value_lines {
            rows.push(format!("{}{more}", " ".repeat(name_width + 3)));
        }
    }
    lines(rows)
}

fn dictionary_table(entries: &[(PsValue, PsValue)]) -> String {
    let mut rows = Vec::new();
    let mut header = String::new();
    pad(&mut header, "Name", NAME_COLUMN, false);
    header.push_str(" Value");
    rows.push(header);
    let mut dashes = String::new();
    pad(&mut dashes, "----", NAME_COLUMN, false);
    dashes.push_str(" -----");
    rows.push(dashes);
    for (k, v) in entries {
        let mut key = cell(k);
        if width(&key) > NAME_COLUMN {
            key = format!("{}...", key.chars().take(NAME_COLUMN - 3).collect::<String>());
        }
        let mut line = String::new();
        pad(&mut line, &key, NAME_COLUMN, false);
        line.push(' ');
        line.push_str(&cell(v));
        rows.push(line);
    }
    lines(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clixml::parse;
    use crate::clixml::tests_vectors as v;
    use crate::clixml::value::{PsDateTime, PsDuration, PsVersion, SecureBytes};
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn json_of_primitives() {
        let dt = PsDateTime::parse("2018-06-13T23:46:28.00516+00:00").unwrap();
        let cases: Vec<(PsValue, Json)> = vec![
            (PsValue::Nil, json!(null)),
            (PsValue::from("a"), json!("a")),
            (PsValue::Char(65), json!("A")),
            (PsValue::Char(0xD800), json!("\u{FFFD}")),
            (PsValue::Bool(true), json!(true)),
            (PsValue::I32(-5), json!(-5)),
            (PsValue::U64(u64::MAX), json!(u64::MAX)),
            (PsValue::Single(0.1), json!(0.1)),
            (PsValue::Double(1.5), json!(1.5)),
            (PsValue::Double(f64::NAN), json!("NaN")),
            (PsValue::Double(f64::NEG_INFINITY), json!("-Infinity")),
            (PsValue::Decimal("12.50".into()), json!(12.5)),
            (PsValue::Decimal("42".into()), json!(42)),
            (
                PsValue::Decimal("79228162514264337593543950335".into()),
                json!("79228162514264337593543950335"),
            ),
            (PsValue::DateTime(dt), json!("2018-06-13T23:46:28.00516+00:00")),
            (
                PsValue::Duration(PsDuration::from_ticks(90_269_026)),
                json!("PT9.0269026S"),
            ),
            (PsValue::Bytes(vec![0, 1, 2, 3]), json!("AAECAw==")),
            (
                PsValue::Guid(Uuid::nil()),
                json!("00000000-0000-0000-0000-000000000000"),
            ),
            (PsValue::Version(PsVersion::new(2, 3)), json!("2.3")),
            (
                PsValue::SecureString(SecureBytes(b"secret".to_vec())),
                json!("System.Security.SecureString"),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(to_json(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn json_of_objects() {
        assert_eq!(to_json(&parse(v::OUTPUT_HASHTABLE).unwrap()), json!({"a": "b"}));
        assert_eq!(
            to_json(&parse(v::OUTPUT_OBJECT_ARRAY).unwrap()),
            json!(["a", "b"])
        );
        assert_eq!(to_json(&parse(v::OUTPUT_CONSOLE_COLOR).unwrap()), json!(9));
        let service = to_json(&parse(v::OUTPUT_SERVICE_CONTROLLER).unwrap());
        assert_eq!(service["Name"], json!("winrm"));
        assert_eq!(service["Status"], json!("Running"));
        assert_eq!(service["RequiredServices"], json!(["RPCSS", "HTTP"]));
        assert_eq!(service["DependentServices"], json!([]));
        let custom = PsValue::from(PsObject::custom([
            ("A", PsValue::I32(1)),
            ("B", PsValue::array([PsValue::Nil])),
        ]));
        assert_eq!(to_json(&custom), json!({"A": 1, "B": [null]}));
        let mut bare = PsObject::new();
        assert_eq!(to_json(&bare.clone().into()), json!({}));
        bare.to_string = Some("text".into());
        assert_eq!(to_json(&bare.into()), json!("text"));
        let keyed = PsValue::hashtable([(PsValue::I32(1), "one"), (PsValue::Bool(true), "yes")]);
        assert_eq!(to_json(&keyed), json!({"1": "one", "True": "yes"}));
    }

    #[test]
    fn text_of_primitives() {
        assert_eq!(to_text(&PsValue::Nil), "");
        assert_eq!(to_text(&PsValue::Bool(false)), "False");
        assert_eq!(to_text(&PsValue::Double(1e15)), "1E+15");
        assert_eq!(to_text(&PsValue::Double(f64::INFINITY)), "Infinity");
        assert_eq!(
            to_text(&PsValue::DateTime(
                PsDateTime::parse("2018-06-13T23:46:28.00516+00:00").unwrap()
            )),
            "06/13/2018 23:46:28"
        );
        assert_eq!(
            to_text(&PsValue::Duration(PsDuration::from_ticks(90_269_026))),
            "00:00:09.0269026"
        );
        assert_eq!(
            to_text(&PsValue::SecureString(SecureBytes(vec![1]))),
            "System.Security.SecureString"
        );
        assert_eq!(to_text(&PsValue::Bytes(vec![1, 2])), "1\n2");
        assert_eq!(
            to_text(&parse(v::OUTPUT_UNICODE_STRING).unwrap()),
            "こんにちは - actual_x000A_string\nnewline: 𐐷"
        );
        assert_eq!(to_text(&parse(v::OUTPUT_CONSOLE_COLOR).unwrap()), "Blue");
        assert_eq!(to_text(&parse(v::OUTPUT_OBJECT_ARRAY).unwrap()), "a\nb");
    }

    #[test]
    fn hashtables_as_name_value() {
        assert_eq!(
            to_text(&parse(v::OUTPUT_HASHTABLE).unwrap()),
            "Name                           Value\n----                           -----\na                              b"
        );
        let long = PsValue::hashtable([("k".repeat(40), PsValue::array([1, 2, 3, 4, 5].map(PsValue::I32)))]);
        assert_eq!(
            to_text(&long),
            format!(
                "Name                           Value\n----                           -----\n{}... {{1, 2, 3, 4...}}",
                "k".repeat(27)
            )
        );
        assert_eq!(to_text(&PsValue::hashtable(Vec::<(PsValue, PsValue)>::new())), "");
    }

    #[test]
    fn custom_objects_as_table_or_list() {
        let small = PsObject::custom([
            ("Name", PsValue::from("foo")),
            ("Value", PsValue::I32(12_345_678)),
            ("C", PsValue::Bool(true)),
        ]);
        assert_eq!(
            to_text(&small.into()),
            "Name    Value C\n----    ----- -\nfoo  12345678 True"
        );

        let rows = PsValue::array([
            PsObject::custom([("A", PsValue::I32(1)), ("B", PsValue::from("x"))]).into(),
            PsObject::custom([("A", PsValue::I32(22)), ("B", PsValue::from("two\nlines"))]).into(),
            PsValue::from("tail"),
        ]);
        assert_eq!(to_text(&rows), " A B\n - -\n 1 x\n22 two...\n\ntail");

        let wide = PsObject::custom([
            ("Name", PsValue::from("n")),
            ("Id", PsValue::I32(1)),
            ("Tags", PsValue::array(["a", "b"].map(PsValue::from))),
            ("Nested", PsObject::custom([("x", 1)]).into()),
            ("Text", PsValue::from("one\r\ntwo")),
        ]);
        assert_eq!(
            to_text(&wide.into()),
            "Name   : n\nId     : 1\nTags   : {a, b}\nNested : @{x=1}\nText   : one\n         two"
        );
    }

    #[test]
    fn objects_from_powershell() {
        let text = to_text(&parse(v::OUTPUT_SERVICE_CONTROLLER).unwrap());
        assert!(text.starts_with("Name                : winrm\nRequiredServices    : {RPCSS, HTTP}\nCanPauseAndContinue : False\n"), "{text}");
        assert!(text.contains("\nDependentServices   : {}\n"), "{text}");
        let history = to_text(&parse(v::OUTPUT_HISTORY_INFO).unwrap());
        assert!(
            history.contains("StartExecutionTime : 06/13/2018 23:47:39"),
            "{history}"
        );
        assert_eq!(
            to_text(&parse(v::OUTPUT_ERROR_RECORD).unwrap()).lines().count(),
            1
        );
        assert_eq!(
            to_text(&parse(v::VERBOSE_RECORD_NO_INVOCATION).unwrap()),
            "VERBOSE: verbose stream"
        );
        assert_eq!(
            to_text(&parse(v::OUTPUT_SECURE_STRING).unwrap()),
            "System.Security.SecureString"
        );
    }
}
