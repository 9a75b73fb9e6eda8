//! `runner-fence serve`.

use std::process::ExitCode;

use super::{Error, ok};
use crate::webhook::ServeArgs;

pub(super) fn run(args: Box<ServeArgs>) -> Result<ExitCode, Error> {
    crate::webhook::serve(*args)?;
    ok()
}
