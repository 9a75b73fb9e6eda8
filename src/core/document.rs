//! Input documents: a Pod, an AdmissionReview or a node list, as YAML or
//! JSON, from a file or stdin (`-`), within the apiserver's size limit.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Largest input document accepted (the apiserver's own request limit).
pub(crate) const MAX_INPUT_BYTES: u64 = 3 << 20;

/// Why an input document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file (or stdin) could not be read.
    #[error("{}", path.display())]
    Read {
        /// The file, `<stdin>` for `-`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// More than `MAX_INPUT_BYTES` (the apiserver's own request limit).
    #[error("{}: larger than {MAX_INPUT_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not UTF-8.
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// Neither JSON nor YAML.
    #[error("{}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// A document to review that is empty (an empty file or stdin).
    #[error("the input is empty; expected a Pod or an AdmissionReview")]
    Empty,
    /// A document to review without `kind`.
    #[error("document has no kind; expected a Pod or an AdmissionReview")]
    NoKind,
    /// A document to review that is neither a Pod nor an AdmissionReview.
    #[error(
        "kind {0} is not a Pod or an AdmissionReview; runner-fence reviews pods as they are created, so evaluate a Pod (e.g. one made from a Deployment's or Job's pod template)"
    )]
    WrongKind(String),
    /// A node list of the wrong shape.
    #[error("{}: not a list of nodes {{name, labels, taints}}", path.display())]
    NotNodes {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Why a text is not a YAML or JSON document.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// It starts like JSON but is not.
    #[error("invalid JSON")]
    Json(#[source] serde_json::Error),
    /// Not YAML; the first line of the parser's message.
    #[error("invalid YAML: {0}")]
    Yaml(String),
}

/// What a document to review is, by its `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewKind {
    /// A Pod, to be reviewed as the apiserver would send it.
    Pod,
    /// An AdmissionReview, reviewed as given.
    AdmissionReview,
}

/// Whether `doc` is a Pod or an AdmissionReview.
pub fn review_kind(doc: &Value) -> Result<ReviewKind, InputError> {
    if doc.is_null() {
        return Err(InputError::Empty);
    }
    match doc.get("kind").and_then(Value::as_str).unwrap_or("") {
        "Pod" => Ok(ReviewKind::Pod),
        "AdmissionReview" => Ok(ReviewKind::AdmissionReview),
        "" => Err(InputError::NoKind),
        other => Err(InputError::WrongKind(other.to_string())),
    }
}

/// Reads a Pod or AdmissionReview from a file (`-` is stdin), YAML or JSON.
pub(crate) fn read_document(path: &Path) -> Result<Value, InputError> {
    let text = read_text(path)?;
    parse_document(&text).map_err(|source| InputError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an input file (`-` is stdin) as UTF-8 text, within `MAX_INPUT_BYTES`.
pub(crate) fn read_text(path: &Path) -> Result<String, InputError> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| InputError::Read {
                path: "<stdin>".into(),
                source,
            })?;
    } else {
        let read = |source| InputError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read)?;
        f.take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
    }
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| InputError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Parses one YAML or JSON document.
pub(crate) fn parse_document(text: &str) -> Result<Value, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(text).map_err(ParseError::Json);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let s = e.to_string();
        ParseError::Yaml(s.lines().next().unwrap_or("parse error").to_string())
    })
}

/// One document of a YAML stream (`---`-separated), as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamDocument<'a> {
    /// 1-based position among the stream's non-empty documents.
    pub index: usize,
    /// Lines of the stream before this document's first line (add to a
    /// 1-based line within `text` to get the line in the stream).
    pub line_offset: u64,
    /// The document's text, its `---` marker included.
    pub text: &'a str,
}

/// Splits a YAML stream into its documents, so that each can be parsed (and
/// its errors located) on its own. Empty documents (blank lines, comments,
/// directives only) are left out, as kubectl does. A line starting with
/// `---` or `...` followed by a blank or the end of the line is a document
/// marker wherever it appears: YAML forbids such a line inside content, so
/// splitting on lines is exact.
pub fn split_stream(text: &str) -> Vec<StreamDocument<'_>> {
    fn marker(line: &str, m: &str) -> Option<bool> {
        let rest = line.strip_prefix(m)?;
        if !(rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n'])) {
            return None;
        }
        // Whether the marker line itself carries content (`--- {a: 1}`).
        let rest = rest.trim();
        Some(!rest.is_empty() && !rest.starts_with('#'))
    }
    fn content(line: &str) -> bool {
        let t = line.trim();
        !t.is_empty() && !t.starts_with('#') && !line.starts_with('%')
    }
    let mut out = Vec::new();
    let mut push = |start: usize, end: usize, offset: u64| {
        out.push(StreamDocument {
            index: out.len() + 1,
            line_offset: offset,
            text: &text[start..end],
        });
    };
    let (mut start, mut start_line, mut has_content) = (0usize, 0u64, false);
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let i = i as u64;
        let end = pos + line.len();
        if let Some(inline) = marker(line, "---") {
            if has_content {
                push(start, pos, start_line);
            }
            (start, start_line, has_content) = (pos, i, inline);
        } else if marker(line, "...").is_some() {
            if has_content {
                push(start, end, start_line);
            }
            (start, start_line, has_content) = (end, i + 1, false);
        } else if content(line) {
            has_content = true;
        }
        pos = end;
    }
    if has_content {
        push(start, text.len(), start_line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// (first line of each document's text, its line offset).
    fn shape(text: &str) -> Vec<(String, u64)> {
        split_stream(text)
            .iter()
            .map(|d| {
                (
                    d.text.lines().next().unwrap_or("").to_string(),
                    d.line_offset,
                )
            })
            .collect()
    }

    #[rstest]
    #[case::single_without_marker("a: 1\nb: 2\n", &[("a: 1", 0)])]
    #[case::leading_marker("---\na: 1\n", &[("---", 0)])]
    #[case::two("a: 1\n---\nb: 2\n", &[("a: 1", 0), ("---", 1)])]
    #[case::empty_documents_skipped("---\n# only a comment\n---\n\n---\nb: 2\n---\n", &[("---", 4)])]
    #[case::comment_before_first_marker("# header\n---\na: 1\n", &[("---", 1)])]
    #[case::directive("%YAML 1.2\n---\na: 1\n", &[("---", 1)])]
    #[case::content_on_marker_line("--- {a: 1}\n--- {b: 2}\n", &[("--- {a: 1}", 0), ("--- {b: 2}", 1)])]
    #[case::end_marker("a: 1\n...\nb: 2\n", &[("a: 1", 0), ("b: 2", 2)])]
    #[case::dashes_in_content("a: ---x\nb: |\n  ---\n----\n", &[("a: ---x", 0)])]
    #[case::crlf("a: 1\r\n---\r\nb: 2\r\n", &[("a: 1", 0), ("---", 1)])]
    #[case::nothing("\n# nothing\n", &[])]
    fn streams_split_into_documents(#[case] text: &str, #[case] want: &[(&str, u64)]) {
        let want: Vec<(String, u64)> = want.iter().map(|(l, o)| (l.to_string(), *o)).collect();
        assert_eq!(shape(text), want);
        let docs = split_stream(text);
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(d.index, i + 1);
        }
    }

    #[test]
    fn documents_are_each_parseable_and_cover_the_content() {
        let text = "kind: A\n---\nkind: B\nx: [1,\n  2]\n---\n# c\nkind: C\n";
        let kinds: Vec<String> = split_stream(text)
            .iter()
            .map(|d| {
                let v = parse_document(d.text).expect("parses");
                v["kind"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(kinds, ["A", "B", "C"]);
    }
}
