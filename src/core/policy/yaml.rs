//! Policy text to a typed document: the YAML reading options and the wording
//! of what can go wrong while reading.
//!
//! Documents are read as YAML 1.2 core data, which is what the JSON Schema
//! (`runner-fence schema`) validates: `yes`, `on` or a quoted `"true"` are
//! strings, never booleans, and a plain `1`, `true` or `null` is never silently
//! taken for a string. So the loader and the schema accept the same documents
//! (a property test in `schema.rs` checks it).

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_saphyr::Error as YamlError;
use serde_saphyr::MessageFormatter as _;

use super::LoadError;
use super::locate::{Seg, format_path, key_at};
use crate::core::scalar::{BOOLEANS, yaml_options};

/// Reads one YAML (or JSON) document into `T`; errors name `file`, the line,
/// the column and the field path.
pub(super) fn from_str<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, LoadError> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(src, yaml_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let loc = e.location();
        LoadError {
            file: file.to_string(),
            line: loc.map(|l| l.line()).filter(|l| *l > 0),
            column: loc.map(|l| l.column()).filter(|c| *c > 0),
            path: path.map(|p| field_path(&p, &e, src)).unwrap_or_default(),
            message: message(&e, src),
        }
    })
}

/// The field path of an error. serde marks a mapping key it did not keep as
/// `?` (enum keys such as rule names); the source names it, or the error
/// itself for a duplicate key (a document with one does not parse again).
fn field_path(path: &serde_path_to_error::Path, e: &YamlError, src: &str) -> String {
    let at = e.location().map(|l| (l.line(), l.column()));
    let duplicate = match e.without_snippet() {
        YamlError::DuplicateMappingKey { key, .. } => key.clone(),
        _ => None,
    };
    let mut segs: Vec<Seg> = Vec::new();
    for s in path.iter() {
        let seg = match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => at
                .and_then(|at| key_at(src, &segs, at))
                .or_else(|| duplicate.clone())
                .map(Seg::Key),
        };
        match seg {
            Some(seg) => segs.push(seg),
            // Nothing below an unnamed key can be named either.
            None => break,
        }
    }
    format_path(&segs)
}

/// What is wrong, in our words: never a hint about the library's API.
fn message(e: &YamlError, src: &str) -> String {
    match e.without_snippet() {
        YamlError::Eof { .. } if src.trim().is_empty() => {
            "the document is empty; a policy is a RunnerPolicy mapping (apiVersion, kind, metadata, match, protectedNodes, placement)".into()
        }
        YamlError::Eof { .. } => "the document ends in the middle of a value".into(),
        YamlError::MultipleDocuments { .. } => {
            "a second YAML document (after `---`); a policy file holds exactly one (`runner-fence lint FILE` judges a file of several RunnerFencePolicy objects)".into()
        }
        YamlError::DuplicateMappingKey { key: Some(k), .. } => {
            format!("key {k:?} appears twice in the same mapping; keep one")
        }
        YamlError::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice in the same mapping; keep one".into()
        }
        YamlError::InvalidBooleanStrict { .. } => format!("expected {BOOLEANS}"),
        YamlError::QuotingRequired { value, .. } => format!(
            "expected a string, got {value} (a YAML {}); quote it if the text is meant",
            plain_kind(value)
        ),
        YamlError::NullIntoString { .. } => "expected a string, got null".into(),
        YamlError::Unexpected { expected, .. } => format!("expected {}", yaml_kind(expected)),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, got {}", serde_kind(unexpected)),
        YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, got {}", serde_kind(unexpected)),
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => format!("{variant:?} is not one of {}", expected.join(", ")),
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown field `{field}`, expected one of {}",
            expected.join(", ")
        ),
        YamlError::SerdeMissingField { field, .. } => format!("missing field `{field}`"),
        YamlError::Message { msg, .. } => msg.clone(),
        other => serde_saphyr::UserMessageFormatter
            .format_message(other)
            .into_owned(),
    }
}

/// What a plain scalar that is not a string reads as.
fn plain_kind(value: &str) -> &'static str {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => "null",
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => "boolean",
        _ => "number",
    }
}

/// The parser's names for node kinds, as a user reads them.
fn yaml_kind(expected: &str) -> String {
    match expected {
        "mapping start" | "mapping" => "a mapping (key: value)".into(),
        "sequence start" | "sequence" => "a list".into(),
        "string scalar" => "a string".into(),
        "scalar" => "a single value".into(),
        other => other.to_string(),
    }
}

/// serde's names for what it got, as a user reads them.
fn serde_kind(unexpected: &str) -> String {
    match unexpected {
        "unit value" => "null".into(),
        "map" => "a mapping".into(),
        "sequence" => "a list".into(),
        other => other.replace('`', ""),
    }
}
