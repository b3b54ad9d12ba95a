//! The one error type of the CLIXML layer.

use thiserror::Error;

/// Longest piece of the input an error message quotes; the rest is cut so that a hostile peer cannot
/// make an error message as large as its input.
const QUOTE_LIMIT: usize = 64;

/// Why CLIXML could not be read (or a value could not be turned into a record).
///
/// The variants name what went wrong, never where in the Rust code: they are meant to be shown to a
/// user next to "the remote host sent data this client cannot read".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClixmlError {
    /// The text is not well-formed XML (unclosed tags, bad entity, bad attribute...).
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    /// A DOCTYPE declaration: CLIXML never has one and refusing it keeps entity tricks out.
    #[error("a DOCTYPE declaration is not allowed in CLIXML")]
    DocType,
    /// The input is larger than [`Limits::max_input_bytes`](super::Limits::max_input_bytes).
    #[error("CLIXML input of {size} bytes is larger than the limit of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    /// Objects nest deeper than [`Limits::max_depth`](super::Limits::max_depth).
    #[error("CLIXML objects nest deeper than the limit of {limit}")]
    TooDeep { limit: usize },
    /// `<Ref>` and `<TNRef>` copies would make the value larger than
    /// [`Limits::max_expanded_bytes`](super::Limits::max_expanded_bytes).
    #[error("CLIXML references expand to more than the limit of {limit} bytes")]
    ExpansionLimit { limit: usize },
    /// No element at all (empty input, only whitespace or comments).
    #[error("no CLIXML element found")]
    Empty,
    /// Something after the single top-level element [`parse`](super::parse) expects.
    #[error("unexpected content after the top-level element: {found}")]
    TrailingContent { found: String },
    /// An element whose name CLIXML does not define, or one in a place where it is not allowed.
    #[error("unexpected element <{element}> in {context}")]
    UnexpectedElement { element: String, context: &'static str },
    /// Non-whitespace text where only elements may be.
    #[error("unexpected text {text:?} in {context}")]
    UnexpectedText { text: String, context: &'static str },
    /// A required attribute is missing (`N` on a property, `RefId` on `<Ref>`...).
    #[error("<{element}> has no {attribute} attribute")]
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    /// A `<Ref RefId>` naming no object seen before it.
    #[error("<Ref RefId=\"{0}\"> refers to no object seen before it")]
    UnknownRef(String),
    /// A `<TNRef RefId>` naming no type-name list seen before it.
    #[error("<TNRef RefId=\"{0}\"> refers to no type-name list seen before it")]
    UnknownTypeRef(String),
    /// A dictionary entry without its `Key` or `Value`.
    #[error("dictionary entry <En> without a {missing}")]
    BadDictEntry { missing: &'static str },
    /// An object with two contents (two primitive values, a list and a dictionary...).
    #[error("<Obj> has more than one value or container ({second} after another)")]
    DuplicateContent { second: String },
    /// A primitive element whose text is not a valid value of its type.
    #[error("invalid <{element}> value {text:?}: {reason}")]
    InvalidValue {
        element: &'static str,
        text: String,
        reason: String,
    },
    /// A value that is not the kind of record asked for (records.rs).
    #[error("expected {expected}, found {found}")]
    NotARecord { expected: &'static str, found: String },
}

impl ClixmlError {
    pub(crate) fn invalid(element: &'static str, text: &str, reason: impl Into<String>) -> ClixmlError {
        ClixmlError::InvalidValue {
            element,
            text: quote(text),
            reason: reason.into(),
        }
    }

    pub(crate) fn unexpected_text(text: &str, context: &'static str) -> ClixmlError {
        ClixmlError::UnexpectedText {
            text: quote(text),
            context,
        }
    }

    pub(crate) fn unexpected_element(element: &str, context: &'static str) -> ClixmlError {
        ClixmlError::UnexpectedElement {
            element: quote(element),
            context,
        }
    }
}

/// Cuts `text` to at most [`QUOTE_LIMIT`] characters for an error message.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut() {
        let long = "é".repeat(200);
        let q = quote(&long);
        assert_eq!(q.chars().count(), QUOTE_LIMIT + 3);
        assert!(q.ends_with("..."));
        assert_eq!(quote("short"), "short");
    }

    #[test]
    fn messages_name_the_problem() {
        let e = ClixmlError::invalid("I32", "abc", "not an integer");
        assert_eq!(e.to_string(), "invalid <I32> value \"abc\": not an integer");
        assert_eq!(
            ClixmlError::UnknownRef("7".into()).to_string(),
            "<Ref RefId=\"7\"> refers to no object seen before it"
        );
    }
}
