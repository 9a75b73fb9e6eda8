//! An error and its causes on one line: `what failed: why: root cause`.
//!
//! Every layer's error type keeps its cause behind `#[source]` instead of
//! pasting it into its own message; this is where the chain is read back,
//! for the CLI's `error:` line, logs and messages that name an error.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, joined with `: `. A
/// cause whose text is already shown (libraries that repeat their source in
/// their own message) is not repeated.
pub struct Report<'a>(pub &'a dyn Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                if !shown.is_empty() {
                    shown.push_str(": ");
                }
                shown.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn joins_the_chain_without_repeating_a_cause() {
        let e = Outer("p.yaml", std::io::Error::other("gone"));
        assert_eq!(Report(&e).to_string(), "reading p.yaml: gone");
        let e = Repeats(std::io::Error::other("gone"));
        assert_eq!(Report(&e).to_string(), "wrapped: gone");
    }
}
