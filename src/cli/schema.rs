//! `runner-fence schema`.

use std::process::ExitCode;

use super::{Error, ok};
use crate::core::policy::Policy;

pub(super) fn run() -> Result<ExitCode, Error> {
    outln!("{}", schema_json());
    ok()
}

/// The JSON Schema of a policy document.
fn schema_json() -> String {
    let schema = schemars::schema_for!(Policy);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
