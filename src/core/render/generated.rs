//! Every checked-in file generated from the reference policy or the policy model,
//! as one list: `runner-fence dev regen` ([`REGEN`]) writes them and the staleness
//! tests compare the tree against them, so a new generated file is added here once.

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::core::policy::{self, LoadError};
use crate::core::render::crd::{self, SchemaError};

/// The one command that rewrites every generated file; staleness tests name it.
pub const REGEN: &str = "cargo run -- dev regen";

/// The reference policy, relative to the repository root (the binary embeds it too).
pub const REFERENCE_POLICY: &str = "examples/policy.yaml";
/// The chart's values schema: written by hand except `initialPolicy.spec.anyOf[1]`.
pub const VALUES_SCHEMA: &str = "charts/runner-fence/values.schema.json";

/// The reference policy in audit mode (tests, the helmfile example, fuzz seeds).
pub const AUDIT_POLICY: &str = "examples/policy-audit.yaml";
/// The audit policy: the reference policy with this mode line changed.
const ENFORCE_LINE: &str = "mode: enforce ";
/// Same width, so the line's comment stays aligned.
const AUDIT_LINE: &str = "mode: audit   ";

/// Where in [`VALUES_SCHEMA`] the CRD's spec schema goes.
const SPEC_IN_VALUES: [Step; 6] = [
    Step::Key("properties"),
    Step::Key("initialPolicy"),
    Step::Key("properties"),
    Step::Key("spec"),
    Step::Key("anyOf"),
    Step::Index(1),
];

/// The inputs the generated files are made from (texts read from the tree).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// [`REFERENCE_POLICY`].
    pub reference_policy: &'a str,
    /// [`VALUES_SCHEMA`] as it is (its hand-written parts are kept).
    pub values_schema: &'a str,
}

/// One generated file: its path from the repository root and its whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the repository root.
    pub path: &'static str,
    /// What the file must contain.
    pub text: String,
}

/// Why the generated files cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The reference policy (or its audit copy) does not load.
    #[error(transparent)]
    Policy(#[from] LoadError),
    /// The CRD schema cannot be generated from the policy model.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The audit policy is made by changing the mode line.
    #[error("{REFERENCE_POLICY} has no line with {ENFORCE_LINE:?} to turn into the audit policy")]
    NoEnforceMode,
    /// The values schema is not JSON of the expected shape.
    #[error("{VALUES_SCHEMA}: {0}")]
    ValuesSchema(String),
}

/// Every generated file, from the inputs; paths are unique and sorted.
pub fn files(inputs: Inputs<'_>) -> Result<Vec<File>, GenerateError> {
    policy::parse(inputs.reference_policy, REFERENCE_POLICY)?;
    let audit_text = match inputs.reference_policy.find(ENFORCE_LINE) {
        Some(_) => inputs
            .reference_policy
            .replacen(ENFORCE_LINE, AUDIT_LINE, 1),
        None => return Err(GenerateError::NoEnforceMode),
    };
    // Both load (the generated audit copy must too).
    policy::parse(&audit_text, AUDIT_POLICY)?;
    let crd = crd::render_yaml()?;
    let mut files = vec![
        File {
            path: AUDIT_POLICY,
            text: audit_text,
        },
        File {
            path: "manifests/base/crd.yaml",
            text: crd.clone(),
        },
        File {
            path: "charts/runner-fence/crds/runnerfencepolicies.runner-fence.dev.yaml",
            text: crd,
        },
        File {
            path: VALUES_SCHEMA,
            text: splice(inputs.values_schema, &SPEC_IN_VALUES, &crd::spec_schema()?)
                .map_err(GenerateError::ValuesSchema)?,
        },
    ];
    files.sort_by_key(|f| f.path);
    Ok(files)
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, Copy)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// `text` with the value at `path` replaced by `value`, pretty-printed at that
/// value's indentation; everything else (key order, formatting) is kept as written,
/// which re-serialising the whole document would not do.
fn splice(text: &str, path: &[Step], value: &Value) -> Result<String, String> {
    let mut start = 0;
    let mut end = text.len();
    let mut at = String::new();
    for step in path {
        let inner = &text[start..end];
        let raw: &RawValue = match *step {
            Step::Key(key) => {
                at.push('.');
                at.push_str(key);
                let map: HashMap<String, &RawValue> = serde_json::from_str(inner)
                    .map_err(|e| format!("{} is not an object: {e}", where_(&at)))?;
                map.get(key).ok_or_else(|| format!("no {}", where_(&at)))?
            }
            Step::Index(i) => {
                at.push_str(&format!("[{i}]"));
                let items: Vec<&RawValue> = serde_json::from_str(inner)
                    .map_err(|e| format!("{} is not an array: {e}", where_(&at)))?;
                items.get(i).ok_or_else(|| format!("no {}", where_(&at)))?
            }
        };
        // The raw value borrows from `inner`: its offset there is where it starts.
        let offset = raw.get().as_ptr() as usize - inner.as_ptr() as usize;
        start += offset;
        end = start + raw.get().len();
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = text[line_start..start]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let pretty = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    let pretty = pretty.replace('\n', &format!("\n{indent}"));
    Ok(format!("{}{pretty}{}", &text[..start], &text[end..]))
}

fn where_(path: &str) -> String {
    path.trim_start_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_replaces_one_value_and_keeps_the_rest_as_written() {
        let text = "{\n  \"z\": 1,\n  \"a\": {\n    \"list\": [\n      0,\n      {\"old\": true}\n    ]\n  }\n}\n";
        let path = [Step::Key("a"), Step::Key("list"), Step::Index(1)];
        let out = splice(text, &path, &json!({"b": [1], "a": "x"})).expect("splice");
        assert_eq!(
            out,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"list\": [\n      0,\n      {\n        \"a\": \"x\",\n        \"b\": [\n          1\n        ]\n      }\n    ]\n  }\n}\n"
        );
        let back: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(back["a"]["list"][1], json!({"a": "x", "b": [1]}));
    }

    #[test]
    fn splice_names_the_missing_step() {
        let err = splice("{\"a\": [1]}", &[Step::Key("a"), Step::Index(3)], &json!(1))
            .expect_err("no index 3");
        assert_eq!(err, "no a[3]");
        let err = splice("{\"a\": 1}", &[Step::Key("b")], &json!(1)).expect_err("no b");
        assert_eq!(err, "no b");
        let err = splice("[]", &[Step::Key("b")], &json!(1)).expect_err("not an object");
        assert!(err.starts_with("b is not an object"), "{err}");
    }

    #[test]
    fn the_audit_policy_needs_the_mode_line() {
        let text = policy::EMBEDDED_POLICY.replacen(ENFORCE_LINE, "mode: enforce\n#", 1);
        let err = files(Inputs {
            reference_policy: &text,
            values_schema: "{}",
        })
        .expect_err("no mode line");
        assert!(matches!(err, GenerateError::NoEnforceMode), "{err}");
    }
}
