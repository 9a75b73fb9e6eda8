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
