//! The value model: every primitive type of MS-PSRP 2.2.5.1 and the complex object of 2.2.5.2.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::civil;
use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp, Zoned};
use uuid::Uuid;

use super::dotnet;
use super::error::ClixmlError;

/// Type names PowerShell gives a `[PSCustomObject]`.
pub const PS_CUSTOM_OBJECT_TYPE_NAMES: [&str; 2] =
    ["System.Management.Automation.PSCustomObject", "System.Object"];
/// Type names PowerShell gives an `@(...)` array.
pub const ARRAY_TYPE_NAMES: [&str; 3] = ["System.Object[]", "System.Array", "System.Object"];
/// Type names PowerShell gives an `@{...}` hashtable.
pub const HASHTABLE_TYPE_NAMES: [&str; 2] = ["System.Collections.Hashtable", "System.Object"];

/// One PowerShell value as CLIXML carries it.
///
/// Each primitive variant is one element of MS-PSRP 2.2.5.1 (its tag in brackets); everything else
/// is an [`Object`](PsValue::Object) (`<Obj>`). Objects sit behind an [`Arc`]: a `<Ref>` in the input
/// becomes a second handle on the same object rather than a copy, and the serializer writes a
/// `<Ref>` for an object it meets twice (the same `Arc`), as PowerShell does for the same .NET
/// object. Use [`Arc::make_mut`] to change a shared object.
///
/// Equality compares contents; `NaN` equals `NaN` here, so that a value equals its own round trip.
#[derive(Clone, Default)]
pub enum PsValue {
    /// `<Nil />`: `$null`.
    #[default]
    Nil,
    /// `<S>`: `System.String`.
    Str(String),
    /// `<C>`: `System.Char`, one UTF-16 code unit (written as its number).
    Char(u16),
    /// `<B>`: `System.Boolean`.
    Bool(bool),
    /// `<DT>`: `System.DateTime`, kept as its exact text.
    DateTime(PsDateTime),
    /// `<TS>`: `System.TimeSpan` (an xs:duration on the wire).
    Duration(PsDuration),
    /// `<By>`: `System.Byte`.
    U8(u8),
    /// `<SB>`: `System.SByte`.
    I8(i8),
    /// `<U16>`: `System.UInt16`.
    U16(u16),
    /// `<I16>`: `System.Int16`.
    I16(i16),
    /// `<U32>`: `System.UInt32`.
    U32(u32),
    /// `<I32>`: `System.Int32`.
    I32(i32),
    /// `<U64>`: `System.UInt64`.
    U64(u64),
    /// `<I64>`: `System.Int64`.
    I64(i64),
    /// `<Sg>`: `System.Single`.
    Single(f32),
    /// `<Db>`: `System.Double`.
    Double(f64),
    /// `<D>`: `System.Decimal`, kept as its text (96-bit precision has no Rust primitive); see
    /// [`PsValue::decimal`].
    Decimal(String),
    /// `<BA>`: `System.Byte[]` (base64 on the wire).
    Bytes(Vec<u8>),
    /// `<G>`: `System.Guid`.
    Guid(Uuid),
    /// `<URI>`: `System.Uri`.
    Uri(String),
    /// `<Version>`: `System.Version`.
    Version(PsVersion),
    /// `<XD>`: `System.Xml.XmlDocument`, its XML text.
    XmlDocument(String),
    /// `<SBK>`: `System.Management.Automation.ScriptBlock`, its text.
    ScriptBlock(String),
    /// `<SS>`: `System.Security.SecureString`, encrypted with the session key (base64 on the wire).
    SecureString(SecureBytes),
    /// `<Obj>`: a complex object.
    Object(Arc<PsObject>),
}

/// The encrypted bytes of a SecureString. `Debug` shows only their length.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct SecureBytes(pub Vec<u8>);

impl fmt::Debug for SecureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecureBytes(<{} bytes>)", self.0.len())
    }
}

/// The kind of list in an object (MS-PSRP 2.2.5.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `<LST>`: arrays and lists (`IList`).
    List,
    /// `<IE>`: other enumerables.
    Enumerable,
    /// `<QUE>`: `System.Collections.Queue`.
    Queue,
    /// `<STK>`: `System.Collections.Stack`.
    Stack,
}

impl ListKind {
    pub const fn tag(self) -> &'static str {
        match self {
            ListKind::List => "LST",
            ListKind::Enumerable => "IE",
            ListKind::Queue => "QUE",
            ListKind::Stack => "STK",
        }
    }

    pub fn from_tag(tag: &str) -> Option<ListKind> {
        Some(match tag {
            "LST" => ListKind::List,
            "IE" => ListKind::Enumerable,
            "QUE" => ListKind::Queue,
            "STK" => ListKind::Stack,
            _ => return None,
        })
    }
}

/// What an object holds besides its properties.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ObjContent {
    /// Nothing: a plain object (a PSCustomObject, a deserialized .NET object).
    #[default]
    None,
    /// A value the object wraps: an enum's number, a string with note properties (an "extended
    /// primitive"). Written as an unnamed element inside `<Obj>`.
    Value(PsValue),
    /// A list of items.
    List(ListKind, Vec<PsValue>),
    /// `<DCT>`: a dictionary, entries in wire order; keys may be any value and are not deduplicated.
    Dict(Vec<(PsValue, PsValue)>),
}

/// A complex object (MS-PSRP 2.2.5.2): `<Obj>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PsObject {
    /// `<TN>`: most derived first. Kept as on the wire: no `Deserialized.` prefix is added (see
    /// [`PsObject::is`] for a lookup that ignores it).
    pub type_names: Vec<String>,
    /// `<ToString>`: the object's text as the remote side saw it.
    pub to_string: Option<String>,
    /// A wrapped value, a list or a dictionary.
    pub content: ObjContent,
    /// `<Props>`: adapted properties (the .NET object's own).
    pub adapted: PsProperties,
    /// `<MS>`: extended properties (note properties; all of a PSCustomObject's).
    pub extended: PsProperties,
}

/// Properties in order, with PowerShell's case-insensitive names: at most one property per name
/// (compared ignoring case), [`insert`](PsProperties::insert) replaces in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PsProperties(Vec<(String, PsValue)>);

impl PsProperties {
    pub const fn new() -> Self {
        PsProperties(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The property called `name`, ignoring case as PowerShell does.
    pub fn get(&self, name: &str) -> Option<&PsValue> {
        self.0
            .iter()
            .find(|(n, _)| eq_ignore_case(n, name))
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut PsValue> {
        self.0
            .iter_mut()
            .find(|(n, _)| eq_ignore_case(n, name))
            .map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`: a property of that name (ignoring case) keeps its place and its
    /// spelling and gets the new value, which returns the old one; otherwise the property is added
    /// at the end.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<PsValue>) -> Option<PsValue> {
        let name = name.into();
        let value = value.into();
        match self.get_mut(&name) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<PsValue> {
        let at = self.0.iter().position(|(n, _)| eq_ignore_case(n, name))?;
        Some(self.0.remove(at).1)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &PsValue)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

impl PsProperties {
    /// Builds properties from pairs, a later duplicate name (ignoring case) replacing the value of
    /// the first, in time linear in the number of pairs (for input with very many properties).
    pub(crate) fn from_pairs(pairs: Vec<(String, PsValue)>) -> PsProperties {
        if pairs.len() <= 8 {
            return pairs.into_iter().collect();
        }
        let mut index: HashMap<String, usize> = HashMap::with_capacity(pairs.len());
        let mut out: Vec<(String, PsValue)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match index.entry(fold_name(&name)) {
                Entry::Occupied(at) => {
                    if let Some(slot) = out.get_mut(*at.get()) {
                        slot.1 = value;
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(out.len());
                    out.push((name, value));
                }
            }
        }
        PsProperties(out)
    }
}

impl<N: Into<String>, V: Into<PsValue>> FromIterator<(N, V)> for PsProperties {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut props = PsProperties::new();
        for (n, v) in iter {
            props.insert(n, v);
        }
        props
    }
}

impl<N: Into<String>, V: Into<PsValue>> Extend<(N, V)> for PsProperties {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (n, v) in iter {
            self.insert(n, v);
        }
    }
}

impl IntoIterator for PsProperties {
    type Item = (String, PsValue);
    type IntoIter = std::vec::IntoIter<(String, PsValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Compares names the way .NET's `OrdinalIgnoreCase` does: character by character, each folded to
/// its simple upper case.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

fn fold_char(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// A name folded so that names [`eq_ignore_case`] calls equal are equal strings.
pub(crate) fn fold_name(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_uppercase();
    }
    name.chars().map(fold_char).collect()
}

impl PsObject {
    /// An empty object with no type names.
    pub fn new() -> Self {
        PsObject::default()
    }

    /// A `[PSCustomObject]` with these note properties, as `[PSCustomObject]@{...}` makes.
    pub fn custom<N: Into<String>, V: Into<PsValue>>(props: impl IntoIterator<Item = (N, V)>) -> Self {
        PsObject {
            type_names: PS_CUSTOM_OBJECT_TYPE_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            extended: props.into_iter().collect(),
            ..PsObject::default()
        }
    }

    /// Sets the type names, most derived first.
    pub fn with_type_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.type_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The property called `name` (ignoring case): an extended property first, then an adapted one,
    /// the order PowerShell resolves members in.
    pub fn get(&self, name: &str) -> Option<&PsValue> {
        self.extended.get(name).or_else(|| self.adapted.get(name))
    }

    /// All properties, extended first, then the adapted ones an extended property does not hide.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &PsValue)> {
        // With many extended properties, look names up in a set rather than scanning each time.
        let hidden: Option<HashSet<String>> = (self.extended.len() > 8 && !self.adapted.is_empty())
            .then(|| self.extended.names().map(fold_name).collect());
        self.extended
            .iter()
            .chain(self.adapted.iter().filter(move |(n, _)| match &hidden {
                Some(set) => !set.contains(&fold_name(n)),
                None => !self.extended.contains(n),
            }))
    }

    pub fn has_properties(&self) -> bool {
        !self.extended.is_empty() || !self.adapted.is_empty()
    }

    /// Whether `type_name` is one of the object's type names, with or without the `Deserialized.`
    /// prefix PowerShell adds to objects that went through serialization.
    pub fn is(&self, type_name: &str) -> bool {
        self.type_names.iter().any(|t| {
            let t = t.strip_prefix("Deserialized.").unwrap_or(t);
            let wanted = type_name.strip_prefix("Deserialized.").unwrap_or(type_name);
            t == wanted
        })
    }

    /// The items of a list, queue, stack or enumerable.
    pub fn list(&self) -> Option<&[PsValue]> {
        match &self.content {
            ObjContent::List(_, items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a dictionary.
    pub fn dict(&self) -> Option<&[(PsValue, PsValue)]> {
        match &self.content {
            ObjContent::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of the first entry whose key is the string `key`, ignoring case as a PowerShell
    /// hashtable does.
    pub fn dict_get(&self, key: &str) -> Option<&PsValue> {
        self.dict()?
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| eq_ignore_case(k, key)))
            .map(|(_, v)| v)
    }
}

impl PsValue {
    /// An `@(...)` array: `System.Object[]` with `<LST>`.
    pub fn array(items: impl IntoIterator<Item = PsValue>) -> PsValue {
        PsObject {
            type_names: ARRAY_TYPE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            content: ObjContent::List(ListKind::List, items.into_iter().collect()),
            ..PsObject::default()
        }
        .into()
    }

    /// An `@{...}` hashtable: `System.Collections.Hashtable` with `<DCT>`.
    pub fn hashtable<K: Into<PsValue>, V: Into<PsValue>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> PsValue {
        PsObject {
            type_names: HASHTABLE_TYPE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            content: ObjContent::Dict(entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect()),
            ..PsObject::default()
        }
        .into()
    }

    /// A `System.Decimal` from its text, checked.
    pub fn decimal(text: &str) -> Result<PsValue, ClixmlError> {
        let t = text.trim();
        if dotnet::is_decimal(t) {
            Ok(PsValue::Decimal(t.to_owned()))
        } else {
            Err(ClixmlError::invalid("D", text, "not a decimal number"))
        }
    }

    /// A `System.Char` from a character of the Basic Multilingual Plane (a .NET char is one UTF-16
    /// code unit); `None` for others.
    pub fn char(c: char) -> Option<PsValue> {
        u16::try_from(u32::from(c)).ok().map(PsValue::Char)
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, PsValue::Nil)
    }

    /// The text of a string, or of an object that wraps one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PsValue::Str(s) => Some(s),
            PsValue::Object(o) => match &o.content {
                ObjContent::Value(v) => v.as_str(),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PsValue::Bool(b) => Some(*b),
            PsValue::Object(o) => match &o.content {
                ObjContent::Value(v) => v.as_bool(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Any integer type (also an enum, which wraps one) that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PsValue::U8(v) => Some(i64::from(*v)),
            PsValue::I8(v) => Some(i64::from(*v)),
            PsValue::U16(v) => Some(i64::from(*v)),
            PsValue::I16(v) => Some(i64::from(*v)),
            PsValue::U32(v) => Some(i64::from(*v)),
            PsValue::I32(v) => Some(i64::from(*v)),
            PsValue::U64(v) => i64::try_from(*v).ok(),
            PsValue::I64(v) => Some(*v),
            PsValue::Object(o) => match &o.content {
                ObjContent::Value(v) => v.as_i64(),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<i32> {
        self.as_i64().and_then(|v| i32::try_from(v).ok())
    }

    pub fn as_object(&self) -> Option<&PsObject> {
        match self {
            PsValue::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The items if this is an object holding a list.
    pub fn as_list(&self) -> Option<&[PsValue]> {
        self.as_object()?.list()
    }

    /// The property `name` of an object (see [`PsObject::get`]).
    pub fn get(&self, name: &str) -> Option<&PsValue> {
        self.as_object()?.get(name)
    }

    /// A short name of the value's kind for messages: the CLIXML tag, or the first type name.
    pub fn kind(&self) -> String {
        match self {
            PsValue::Object(o) => match o.type_names.first() {
                Some(t) => t.clone(),
                None => "Obj".into(),
            },
            other => other.tag().to_owned(),
        }
    }

    /// The CLIXML element name of the value.
    pub fn tag(&self) -> &'static str {
        match self {
            PsValue::Nil => "Nil",
            PsValue::Str(_) => "S",
            PsValue::Char(_) => "C",
            PsValue::Bool(_) => "B",
            PsValue::DateTime(_) => "DT",
            PsValue::Duration(_) => "TS",
            PsValue::U8(_) => "By",
            PsValue::I8(_) => "SB",
            PsValue::U16(_) => "U16",
            PsValue::I16(_) => "I16",
            PsValue::U32(_) => "U32",
            PsValue::I32(_) => "I32",
            PsValue::U64(_) => "U64",
            PsValue::I64(_) => "I64",
            PsValue::Single(_) => "Sg",
            PsValue::Double(_) => "Db",
            PsValue::Decimal(_) => "D",
            PsValue::Bytes(_) => "BA",
            PsValue::Guid(_) => "G",
            PsValue::Uri(_) => "URI",
            PsValue::Version(_) => "Version",
            PsValue::XmlDocument(_) => "XD",
            PsValue::ScriptBlock(_) => "SBK",
            PsValue::SecureString(_) => "SS",
            PsValue::Object(_) => "Obj",
        }
    }
}

impl fmt::Debug for PsValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PsValue::Nil => f.write_str("Nil"),
            PsValue::Str(v) => f.debug_tuple("Str").field(v).finish(),
            PsValue::Char(v) => f.debug_tuple("Char").field(v).finish(),
            PsValue::Bool(v) => f.debug_tuple("Bool").field(v).finish(),
            PsValue::DateTime(v) => f.debug_tuple("DateTime").field(&v.as_str()).finish(),
            PsValue::Duration(v) => f.debug_tuple("Duration").field(&v.ticks()).finish(),
            PsValue::U8(v) => f.debug_tuple("U8").field(v).finish(),
            PsValue::I8(v) => f.debug_tuple("I8").field(v).finish(),
            PsValue::U16(v) => f.debug_tuple("U16").field(v).finish(),
            PsValue::I16(v) => f.debug_tuple("I16").field(v).finish(),
            PsValue::U32(v) => f.debug_tuple("U32").field(v).finish(),
            PsValue::I32(v) => f.debug_tuple("I32").field(v).finish(),
            PsValue::U64(v) => f.debug_tuple("U64").field(v).finish(),
            PsValue::I64(v) => f.debug_tuple("I64").field(v).finish(),
            PsValue::Single(v) => f.debug_tuple("Single").field(v).finish(),
            PsValue::Double(v) => f.debug_tuple("Double").field(v).finish(),
            PsValue::Decimal(v) => f.debug_tuple("Decimal").field(v).finish(),
            PsValue::Bytes(v) => f.debug_tuple("Bytes").field(v).finish(),
            PsValue::Guid(v) => f.debug_tuple("Guid").field(v).finish(),
            PsValue::Uri(v) => f.debug_tuple("Uri").field(v).finish(),
            PsValue::Version(v) => f.debug_tuple("Version").field(&v.to_string()).finish(),
            PsValue::XmlDocument(v) => f.debug_tuple("XmlDocument").field(v).finish(),
            PsValue::ScriptBlock(v) => f.debug_tuple("ScriptBlock").field(v).finish(),
            PsValue::SecureString(v) => v.fmt(f),
            PsValue::Object(v) => v.fmt(f),
        }
    }
}

impl PartialEq for PsValue {
    fn eq(&self, other: &PsValue) -> bool {
        use PsValue::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Str(a), Str(b)) | (Decimal(a), Decimal(b)) | (Uri(a), Uri(b)) => a == b,
            (XmlDocument(a), XmlDocument(b)) | (ScriptBlock(a), ScriptBlock(b)) => a == b,
            (Char(a), Char(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (DateTime(a), DateTime(b)) => a == b,
            (Duration(a), Duration(b)) => a == b,
            (U8(a), U8(b)) => a == b,
            (I8(a), I8(b)) => a == b,
            (U16(a), U16(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (U32(a), U32(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (U64(a), U64(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (Single(a), Single(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Double(a), Double(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Bytes(a), Bytes(b)) => a == b,
            (Guid(a), Guid(b)) => a == b,
            (Version(a), Version(b)) => a == b,
            (SecureString(a), SecureString(b)) => a == b,
            (Object(a), Object(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

macro_rules! from_primitive {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for PsValue {
            fn from(v: $t) -> PsValue {
                PsValue::$variant(v)
            }
        })*
    };
}

from_primitive! {
    String => Str, bool => Bool, u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => Single, f64 => Double, Vec<u8> => Bytes, Uuid => Guid,
    PsDateTime => DateTime, PsDuration => Duration, PsVersion => Version, Arc<PsObject> => Object,
}

impl From<&str> for PsValue {
    fn from(v: &str) -> PsValue {
        PsValue::Str(v.to_owned())
    }
}

impl From<PsObject> for PsValue {
    fn from(v: PsObject) -> PsValue {
        PsValue::Object(Arc::new(v))
    }
}

impl<T: Into<PsValue>> From<Option<T>> for PsValue {
    fn from(v: Option<T>) -> PsValue {
        v.map_or(PsValue::Nil, Into::into)
    }
}

// ---------------------------------------------------------------------------------------------------

/// A .NET `DateTime` as CLIXML writes it (`2008-04-11T10:42:32.2731993-07:00`).
///
/// The text is kept exactly, so a round trip gives back the same bytes; the parsed parts are at
/// hand through [`civil`](PsDateTime::civil), [`offset`](PsDateTime::offset) and
/// [`timestamp`](PsDateTime::timestamp). Equality compares the text.
#[derive(Clone, Debug)]
pub struct PsDateTime {
    text: String,
    civil: civil::DateTime,
    offset: Option<Offset>,
}

impl PsDateTime {
    /// Reads a `DT` text (see [`PsDateTime`]); surrounding whitespace is dropped.
    pub fn parse(text: &str) -> Result<PsDateTime, ClixmlError> {
        let parts =
            dotnet::parse_datetime(text).map_err(|reason| ClixmlError::invalid("DT", text, reason))?;
        Ok(PsDateTime {
            text: text.trim().to_owned(),
            civil: parts.civil,
            offset: parts.offset,
        })
    }

    /// A UTC instant, written with `Z` (a .NET `DateTimeKind.Utc` date), to 100 ns.
    pub fn from_timestamp(ts: Timestamp) -> Result<PsDateTime, ClixmlError> {
        PsDateTime::from_parts(Offset::UTC.to_datetime(ts), Some(Offset::UTC))
    }

    /// A zoned time, written with its offset (`+02:00`) as .NET writes a `DateTimeKind.Local` date.
    pub fn from_zoned(z: &Zoned) -> Result<PsDateTime, ClixmlError> {
        PsDateTime::from_parts(z.datetime(), Some(z.offset()))
    }

    /// A date and time without zone (.NET `DateTimeKind.Unspecified`).
    pub fn from_civil(dt: civil::DateTime) -> Result<PsDateTime, ClixmlError> {
        PsDateTime::from_parts(dt, None)
    }

    fn from_parts(dt: civil::DateTime, offset: Option<Offset>) -> Result<PsDateTime, ClixmlError> {
        let text = dotnet::format_datetime(dt, offset, true);
        if !(1..=9999).contains(&dt.year()) {
            return Err(ClixmlError::invalid("DT", &text, "year outside 1 to 9999"));
        }
        if offset.is_some_and(|o| o.seconds().unsigned_abs() > 14 * 3600 || o.seconds() % 60 != 0) {
            return Err(ClixmlError::invalid(
                "DT",
                &text,
                "offset not in whole minutes within 14 hours",
            ));
        }
        PsDateTime::parse(&text)
    }

    /// The text as on the wire.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The date and clock time as written (in the writer's zone).
    pub fn civil(&self) -> civil::DateTime {
        self.civil
    }

    /// The UTC offset written with the date (`Z` is zero); `None` when the text has none.
    pub fn offset(&self) -> Option<Offset> {
        self.offset
    }

    /// The instant, when the text says its offset; `None` for a date without zone.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.offset?.to_timestamp(self.civil).ok()
    }
}

impl PartialEq for PsDateTime {
    fn eq(&self, other: &PsDateTime) -> bool {
        self.text == other.text
    }
}

impl Eq for PsDateTime {}

impl fmt::Display for PsDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for PsDateTime {
    type Err = ClixmlError;

    fn from_str(s: &str) -> Result<PsDateTime, ClixmlError> {
        PsDateTime::parse(s)
    }
}

/// A .NET `TimeSpan`: a signed count of 100-nanosecond ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PsDuration {
    ticks: i64,
}

impl PsDuration {
    pub const fn from_ticks(ticks: i64) -> PsDuration {
        PsDuration { ticks }
    }

    pub const fn ticks(self) -> i64 {
        self.ticks
    }

    /// Reads an xs:duration as `XmlConvert.ToTimeSpan` does (a year is 365 days, a month 30).
    pub fn parse(text: &str) -> Result<PsDuration, ClixmlError> {
        dotnet::parse_duration(text)
            .map(PsDuration::from_ticks)
            .map_err(|reason| ClixmlError::invalid("TS", text, reason))
    }

    /// Cut to whole ticks; `None` beyond a `TimeSpan`'s range.
    pub fn from_signed_duration(d: SignedDuration) -> Option<PsDuration> {
        let ticks = d.as_nanos() / 100;
        i64::try_from(ticks).ok().map(PsDuration::from_ticks)
    }

    pub fn to_signed_duration(self) -> SignedDuration {
        let secs = self.ticks / dotnet::TICKS_PER_SECOND;
        let nanos = (self.ticks % dotnet::TICKS_PER_SECOND) * 100;
        SignedDuration::new(secs, i32::try_from(nanos).unwrap_or(0))
    }
}

/// The xs:duration form (`PT9.0269026S`).
impl fmt::Display for PsDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dotnet::format_duration(self.ticks))
    }
}

impl FromStr for PsDuration {
    type Err = ClixmlError;

    fn from_str(s: &str) -> Result<PsDuration, ClixmlError> {
        PsDuration::parse(s)
    }
}

/// A .NET `System.Version`: two to four non-negative components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PsVersion {
    pub major: u32,
    pub minor: u32,
    pub build: Option<u32>,
    /// Only with `build`.
    pub revision: Option<u32>,
}

impl PsVersion {
    pub const fn new(major: u32, minor: u32) -> PsVersion {
        PsVersion {
            major,
            minor,
            build: None,
            revision: None,
        }
    }

    /// Reads `major.minor[.build[.revision]]` as `Version.Parse` does (components up to
    /// `i32::MAX`).
    pub fn parse(text: &str) -> Result<PsVersion, ClixmlError> {
        let bad = |reason: &str| ClixmlError::invalid("Version", text, reason);
        let mut parts = [None; 4];
        for (count, piece) in text.trim().split('.').enumerate() {
            let slot = parts
                .get_mut(count)
                .ok_or_else(|| bad("more than four components"))?;
            if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a component is not a number"));
            }
            let n: u32 = piece.parse().map_err(|_| bad("component out of range"))?;
            if n > i32::MAX.unsigned_abs() {
                return Err(bad("component out of range"));
            }
            *slot = Some(n);
        }
        match parts {
            [Some(major), Some(minor), build, revision] => Ok(PsVersion {
                major,
                minor,
                build,
                revision,
            }),
            _ => Err(bad("fewer than two components")),
        }
    }
}

impl fmt::Display for PsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(build) = self.build {
            write!(f, ".{build}")?;
            if let Some(revision) = self.revision {
                write!(f, ".{revision}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for PsVersion {
    type Err = ClixmlError;

    fn from_str(s: &str) -> Result<PsVersion, ClixmlError> {
        PsVersion::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_ignore_case_and_keep_order() {
        let mut props = PsProperties::new();
        assert_eq!(props.insert("Name", "a"), None);
        assert_eq!(props.insert("Count", 1), None);
        assert_eq!(props.insert("NAME", "b"), Some(PsValue::from("a")));
        assert_eq!(props.names().collect::<Vec<_>>(), ["Name", "Count"]);
        assert_eq!(props.get("name"), Some(&PsValue::from("b")));
        assert_eq!(props.get("ÉTÉ"), None);
        props.insert("été", true);
        assert_eq!(props.get("ÉTÉ"), Some(&PsValue::Bool(true)));
        assert_eq!(props.remove("COUNT"), Some(PsValue::I32(1)));
        assert_eq!(props.len(), 2);
        assert!(eq_ignore_case("straße", "STRAßE"));
        assert!(!eq_ignore_case("a", "ab"));
    }

    #[test]
    fn many_properties_hide_by_name() {
        let mut obj = PsObject::new();
        for i in 0..20 {
            obj.extended.insert(format!("E{i}"), i);
            obj.adapted.insert(format!("e{}", i * 2), -i);
        }
        let names: Vec<_> = obj.properties().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names.len(), 30);
        assert!(names.contains(&"e22".to_owned()));
        assert!(!names.contains(&"e2".to_owned()));
        let pairs = (0..20)
            .map(|i| (if i % 2 == 0 { "Été" } else { "éTÉ" }.to_owned(), PsValue::I32(i)))
            .collect();
        let props = PsProperties::from_pairs(pairs);
        assert_eq!(props.iter().collect::<Vec<_>>(), [("Été", &PsValue::I32(19))]);
    }

    #[test]
    fn object_lookup_prefers_extended() {
        let mut obj =
            PsObject::new().with_type_names(["Deserialized.System.Foo", "Deserialized.System.Object"]);
        obj.adapted.insert("Name", "adapted");
        obj.adapted.insert("Other", 1);
        obj.extended.insert("name", "extended");
        assert_eq!(obj.get("NAME"), Some(&PsValue::from("extended")));
        let names: Vec<_> = obj.properties().map(|(n, _)| n).collect();
        assert_eq!(names, ["name", "Other"]);
        assert!(obj.is("System.Foo"));
        assert!(obj.is("Deserialized.System.Foo"));
        assert!(!obj.is("System.Bar"));
    }

    #[test]
    fn constructors_and_accessors() {
        let table = PsValue::hashtable([("Key", PsValue::from(1))]);
        assert_eq!(
            table.as_object().and_then(|o| o.dict_get("key")),
            Some(&PsValue::I32(1))
        );
        let list = PsValue::array([PsValue::from("a"), PsValue::Nil]);
        assert_eq!(list.as_list().map(<[PsValue]>::len), Some(2));
        assert_eq!(PsValue::from(None::<i32>), PsValue::Nil);
        assert_eq!(PsValue::char('A'), Some(PsValue::Char(65)));
        assert_eq!(PsValue::char('\u{1F600}'), None);
        assert_eq!(PsValue::U64(u64::MAX).as_i64(), None);
        assert!(PsValue::decimal("1.5").is_ok());
        assert!(PsValue::decimal("1e5").is_err());
        let custom = PsValue::from(PsObject::custom([("A", 1)]));
        assert_eq!(custom.get("a"), Some(&PsValue::I32(1)));
        assert_eq!(custom.kind(), "System.Management.Automation.PSCustomObject");
        assert_eq!(PsValue::Double(f64::NAN), PsValue::Double(f64::NAN));
        assert_ne!(PsValue::I32(1), PsValue::I64(1));
    }

    #[test]
    fn secure_string_debug_hides_bytes() {
        let v = PsValue::SecureString(SecureBytes(vec![1, 2, 3]));
        assert_eq!(format!("{v:?}"), "SecureBytes(<3 bytes>)");
    }

    #[test]
    fn datetimes() {
        let dt = PsDateTime::parse("2008-04-11T10:42:32.2731993-07:00").unwrap();
        assert_eq!(dt.as_str(), "2008-04-11T10:42:32.2731993-07:00");
        let ts = dt.timestamp().unwrap();
        assert_eq!(ts.to_string(), "2008-04-11T17:42:32.2731993Z");
        let utc = PsDateTime::from_timestamp(ts).unwrap();
        assert_eq!(utc.as_str(), "2008-04-11T17:42:32.2731993Z");
        assert_ne!(utc, dt);
        assert_eq!(utc.timestamp(), dt.timestamp());
        let naive = PsDateTime::from_civil(civil::date(2020, 1, 2).at(3, 4, 5, 0)).unwrap();
        assert_eq!(naive.as_str(), "2020-01-02T03:04:05");
        assert_eq!(naive.timestamp(), None);
        let zoned = ts.to_zoned(jiff::tz::TimeZone::fixed(Offset::from_seconds(3600).unwrap()));
        assert_eq!(
            PsDateTime::from_zoned(&zoned).unwrap().as_str(),
            "2008-04-11T18:42:32.2731993+01:00"
        );
        assert!(PsDateTime::from_timestamp(Timestamp::MIN).is_err());
    }

    #[test]
    fn durations() {
        let d = PsDuration::parse("PT1.5S").unwrap();
        assert_eq!(d.ticks(), 15_000_000);
        assert_eq!(d.to_signed_duration(), SignedDuration::from_millis(1500));
        assert_eq!(
            PsDuration::from_signed_duration(SignedDuration::from_nanos(-250)),
            Some(PsDuration::from_ticks(-2))
        );
        assert_eq!(
            PsDuration::from_ticks(-2).to_signed_duration(),
            SignedDuration::from_nanos(-200)
        );
        assert_eq!(d.to_string(), "PT1.5S");
    }

    #[test]
    fn versions() {
        assert_eq!(PsVersion::parse("2.3").unwrap(), PsVersion::new(2, 3));
        let v = PsVersion::parse("1.1.0.1").unwrap();
        assert_eq!(v.to_string(), "1.1.0.1");
        assert_eq!(PsVersion::parse("10.0.14393").unwrap().to_string(), "10.0.14393");
        for bad in ["", "1", "1.", "1.2.3.4.5", "a.b", "-1.0", "2147483648.0", "1. 2"] {
            assert!(PsVersion::parse(bad).is_err(), "{bad}");
        }
        assert!(PsVersion::new(2, 2) < PsVersion::new(2, 3));
    }
}
