//! The client's PowerShell host: non-interactive. The operator runs scripts unattended, so it
//! answers the host calls it can answer truthfully and fails the rest (prompts, ReadLine, ReadKey,
//! the raw UI) with an error record, so a script that prompts fails with a clear message instead of
//! waiting for a person who is not there.

use std::sync::OnceLock;

use uuid::Uuid;

use crate::{
    clixml::{PsValue, PsVersion},
    messages::{HostCall, host_error_record},
};

/// The host's name, as `$Host.Name` shows it on the server.
pub const HOST_NAME: &str = "pssession-operator";

/// The answer to a host call that expects one: its return value, or the error record to send.
pub fn answer(call: &HostCall) -> Result<PsValue, PsValue> {
    static INSTANCE: OnceLock<Uuid> = OnceLock::new();
    match call.method_id {
        1 => Ok(PsValue::from(HOST_NAME)),
        2 => Ok(PsValue::Version(PsVersion::new(1, 0))),
        3 => Ok(PsValue::Guid(*INSTANCE.get_or_init(Uuid::new_v4))),
        // GetKeyAvailable, GetIsRunspacePushed: no key waits, no runspace is pushed.
        45 | 54 => Ok(PsValue::Bool(false)),
        _ => Err(host_error_record(
            call.method_name.as_deref().unwrap_or("this host method"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method_id: i64, name: &str) -> HostCall {
        HostCall {
            call_id: 1,
            method_id,
            method_name: Some(name.to_owned()),
            parameters: Vec::new(),
        }
    }

    #[test]
    fn answers_what_it_can_and_refuses_prompts() {
        assert_eq!(answer(&call(1, "GetName")), Ok(PsValue::from(HOST_NAME)));
        assert_eq!(answer(&call(54, "GetIsRunspacePushed")), Ok(PsValue::Bool(false)));
        let refused = answer(&call(11, "ReadLine")).expect_err("ReadLine cannot be answered");
        let text = refused
            .as_object()
            .and_then(|o| o.to_string.clone())
            .unwrap_or_default();
        assert!(
            text.contains("not interactive") && text.contains("ReadLine"),
            "{text}"
        );
    }
}
