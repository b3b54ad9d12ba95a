//! The error of the WS-Management layer: a response that is not what was expected, or a fault.

use thiserror::Error;

use super::fault::Fault;
use super::xml::XmlError;

/// Why a response could not be used: it is not a WS-Management envelope of the expected kind, or
/// it is a fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WsmanError {
    #[error(transparent)]
    Xml(#[from] XmlError),
    #[error("not a SOAP 1.2 envelope (root element {0})")]
    NotEnvelope(String),
    #[error("the envelope has no {0}")]
    Missing(&'static str),
    #[error("expected the action {expected}, the server answered {got}")]
    UnexpectedAction { expected: &'static str, got: String },
    #[error("invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
    /// The server answered with a fault (boxed: faults carry the remote text).
    #[error(transparent)]
    Fault(Box<Fault>),
}

impl From<Fault> for WsmanError {
    fn from(fault: Fault) -> Self {
        WsmanError::Fault(Box::new(fault))
    }
}

impl WsmanError {
    pub(crate) fn invalid(what: &'static str, value: impl Into<String>) -> Self {
        WsmanError::Invalid {
            what,
            value: value.into(),
        }
    }

    /// The fault, when the server answered with one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            WsmanError::Fault(f) => Some(f),
            _ => None,
        }
    }

    /// The server's "nothing within the OperationTimeout": for a Receive, ask again.
    pub fn is_operation_timeout(&self) -> bool {
        matches!(self.fault(), Some(Fault::OperationTimeout(_)))
    }
}
