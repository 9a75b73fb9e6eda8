//! `runner-fence schema`.

use std::process::ExitCode;

use super::{Error, ok};
use crate::core::policy;

pub(super) fn run() -> Result<ExitCode, Error> {
    outln!("{}", schema_json());
    ok()
}

/// The JSON Schema of a policy document.
fn schema_json() -> String {
    serde_json::to_string_pretty(&policy::json_schema())
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
