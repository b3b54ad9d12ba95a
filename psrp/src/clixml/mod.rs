//! CLIXML: the PowerShell serialization format PSRP message bodies are written in (MS-PSRP 2.2.5).
//!
//! - [`PsValue`] is one value: every primitive type of MS-PSRP 2.2.5.1, or a [`PsObject`] (2.2.5.2)
//!   with type names, `ToString`, a wrapped value or a list or dictionary, and adapted and extended
//!   properties;
//! - [`to_clixml`] / [`Serializer`] write values as PowerShell does, [`parse`] / [`parse_document`]
//!   read them back, bounded by [`Limits`] and failing with a [`ClixmlError`], never a panic;
//! - [`escape`] is the `_xHHHH_` string escaping both ways;
//! - [`ErrorRecord`], [`InformationalRecord`] (warning, verbose, debug), [`InformationRecord`] and
//!   [`ProgressRecord`] read the stream records out of the objects PowerShell sends them as;
//! - [`to_json`] and [`to_text`] render output objects for people and tools.
//!
//! Sans-IO: strings in, strings out. SecureStrings stay encrypted bytes here; the session key that
//! opens them belongs to the runspace pool.

mod de;
mod dotnet;
mod error;
pub mod escape;
mod records;
mod render;
mod ser;
mod value;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests_vectors;

pub use de::{Limits, parse, parse_document, parse_document_with_limits, parse_with_limits};
pub use error::ClixmlError;
pub use records::{
    ERROR_CATEGORIES, ErrorCategoryInfo, ErrorDetails, ErrorRecord, InformationRecord, InformationalKind,
    InformationalRecord, InvocationInfo, ProgressRecord, ProgressRecordType,
};
pub use render::{SECURE_STRING_PLACEHOLDER, to_json, to_text};
pub use ser::{CLIXML_NAMESPACE, CLIXML_VERSION, Serializer, to_clixml, to_clixml_document};
pub use value::{
    ARRAY_TYPE_NAMES, HASHTABLE_TYPE_NAMES, ListKind, ObjContent, PS_CUSTOM_OBJECT_TYPE_NAMES, PsDateTime,
    PsDuration, PsObject, PsProperties, PsValue, PsVersion, SecureBytes, eq_ignore_case,
};
