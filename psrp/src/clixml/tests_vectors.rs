//! CLIXML test vectors from pypsrp's recorded Windows traffic and psrpcore's tests (both MIT
//! licensed, (c) Jordan Borean); see `testdata/README.md` for where each comes from.

pub const ERROR_RECORD_WRITE_ERROR: &str = include_str!("testdata/error_record_write_error.xml");
pub const PIPELINE_STATE_FAILED: &str = include_str!("testdata/pipeline_state_failed.xml");
pub const WARNING_RECORD: &str = include_str!("testdata/warning_record.xml");
pub const VERBOSE_RECORD: &str = include_str!("testdata/verbose_record.xml");
pub const VERBOSE_RECORD_NO_INVOCATION: &str = include_str!("testdata/verbose_record_no_invocation.xml");
pub const DEBUG_RECORD: &str = include_str!("testdata/debug_record.xml");
pub const INFORMATION_RECORD: &str = include_str!("testdata/information_record.xml");
pub const PROGRESS_RECORD: &str = include_str!("testdata/progress_record.xml");
pub const PSRPCORE_ERROR_WITH_DETAILS: &str = include_str!("testdata/psrpcore_error_with_details.xml");
pub const OUTPUT_UNICODE_STRING: &str = include_str!("testdata/output_unicode_string.xml");
pub const OUTPUT_SERVICE_CONTROLLER: &str = include_str!("testdata/output_service_controller.xml");
pub const OUTPUT_HASHTABLE: &str = include_str!("testdata/output_hashtable.xml");
pub const OUTPUT_OBJECT_ARRAY: &str = include_str!("testdata/output_object_array.xml");
pub const OUTPUT_CONSOLE_COLOR: &str = include_str!("testdata/output_console_color.xml");
pub const OUTPUT_PRIMITIVE_DICTIONARY: &str = include_str!("testdata/output_primitive_dictionary.xml");
pub const OUTPUT_PSVARIABLE: &str = include_str!("testdata/output_psvariable.xml");
pub const OUTPUT_HISTORY_INFO: &str = include_str!("testdata/output_history_info.xml");
pub const OUTPUT_ERROR_RECORD: &str = include_str!("testdata/output_error_record.xml");
pub const OUTPUT_SECURE_STRING: &str = include_str!("testdata/output_secure_string.xml");

/// Every vector PowerShell itself wrote (all but the psrpcore one), for round-trip tests.
pub const FROM_POWERSHELL: &[&str] = &[
    ERROR_RECORD_WRITE_ERROR,
    PIPELINE_STATE_FAILED,
    WARNING_RECORD,
    VERBOSE_RECORD,
    VERBOSE_RECORD_NO_INVOCATION,
    DEBUG_RECORD,
    INFORMATION_RECORD,
    PROGRESS_RECORD,
    OUTPUT_UNICODE_STRING,
    OUTPUT_SERVICE_CONTROLLER,
    OUTPUT_HASHTABLE,
    OUTPUT_OBJECT_ARRAY,
    OUTPUT_CONSOLE_COLOR,
    OUTPUT_PRIMITIVE_DICTIONARY,
    OUTPUT_PSVARIABLE,
    OUTPUT_HISTORY_INFO,
    OUTPUT_ERROR_RECORD,
    OUTPUT_SECURE_STRING,
];
