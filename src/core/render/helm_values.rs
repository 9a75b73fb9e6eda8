//! `render helm-values`: the values that install a policy with the Helm chart.
//!
//! The chart cannot run Rust, and a second implementation of the webhook scope
//! and the backstop's CEL in Go templates would drift from the engine. So the
//! chart takes two values written by this one function: `policy` (the policy,
//! validated by the chart's values schema, mounted for the server) and
//! `rendered` (the webhook configurations and the backstop generated from it
//! by [`super::webhooks::objects`] and [`super::admission_policy::objects`], and
//! the webhook's own node affinity from [`super::placement`]).
//! `rendered.sha256` is the SHA-256 of both (without itself) as Helm's
//! `toJson` writes them; the chart refuses to render when it does not match,
//! so editing the policy in the values without running this again, or editing
//! a generated object by hand, fails at install, not in production.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::webhooks::{self, Client, FailurePolicy, Options, RenderError};
use crate::core::policy::{self, LoadError, Mode};

/// The largest integer Helm carries exactly: it reads values as float64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Where the chart is installed; the scope excludes the webhook's namespace.
#[derive(Clone, Debug)]
pub struct Target {
    /// Release namespace (the webhook's own, never reviewed).
    pub namespace: String,
    /// Name of the Service the apiserver calls.
    pub service: String,
}

/// Why values cannot be rendered for a policy.
#[derive(Debug, thiserror::Error)]
pub enum HelmValuesError {
    /// The policy does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The policy loads but its objects cannot be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// No node affinity keeps the webhook off the profiles' nodes.
    #[error(transparent)]
    Placement(#[from] super::placement::PlacementError),
    /// A number Helm would change on the way through (it reads numbers as float64).
    #[error(
        "{file}: {path}: the number {value} would not pass through Helm values unchanged (Helm reads numbers as 64-bit floats); write it as a string"
    )]
    Number {
        /// Policy file.
        file: String,
        /// JSON path of the number.
        path: String,
        /// The number as written.
        value: String,
    },
}

/// The chart values (`policy`, `rendered`) for the policy text `src` read from `file`.
pub fn values(src: &str, file: &str, target: &Target) -> Result<Value, HelmValuesError> {
    let loaded = policy::parse(src, file)?;
    // Read as the loader reads it (YAML 1.2 core): `name: yes` stays a string.
    let raw: Value = serde_saphyr::from_str_with_options(src, crate::core::scalar::yaml_options())
        .map_err(|e| LoadError {
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: e.to_string(),
        })?;
    // Helm drops null map entries when it merges values; drop them first so
    // the checksum is over what the chart will see.
    let raw = without_nulls(raw);
    check_numbers(&raw, file, &mut String::new())?;
    // What the server will read from the ConfigMap is `toJson` of this value:
    // make sure it is the same policy.
    policy::parse(&go_json(&raw, None), file).map_err(|e| LoadError {
        file: file.to_string(),
        // The position is in the JSON, not in the user's file: leave it out.
        line: None,
        column: None,
        path: e.path,
        message: format!(
            "the policy loads, but not as the chart mounts it (JSON written by Helm): {} (a control character in a string?)",
            e.message
        ),
    })?;

    let failure = match loaded.mode {
        Mode::Enforce => FailurePolicy::Fail,
        // Audit mode never blocks: an outage must not either.
        Mode::Audit => FailurePolicy::Ignore,
    };
    let opts = Options {
        client: Client::Service {
            name: target.service.clone(),
            namespace: target.namespace.clone(),
            port: 443,
        },
        ca_bundle: None,
        mutate_failure_policy: failure,
        validate_failure_policy: failure,
        timeout_seconds: 5,
        names: webhooks::Names::default(),
    };
    let [mutating, validating] = webhooks::objects(&loaded, &opts)?;
    let backstop = super::admission_policy::objects(&loaded, &target.namespace)?;
    let mut rendered = Map::new();
    // The chart refuses values written by another version: the scope may differ.
    rendered.insert(
        "generator".into(),
        format!("runner-fence {}", env!("CARGO_PKG_VERSION")).into(),
    );
    rendered.insert("namespace".into(), target.namespace.clone().into());
    rendered.insert("service".into(), target.service.clone().into());
    rendered.insert("mutatingWebhookConfiguration".into(), mutating);
    rendered.insert("validatingWebhookConfiguration".into(), validating);
    // Policies and their bindings, in order (a second pair when rules audit).
    rendered.insert("backstop".into(), Value::Array(backstop));
    rendered.insert(
        "webhookNodeAffinity".into(),
        super::placement::webhook_node_affinity(&loaded)?,
    );
    let mut both = Map::new();
    both.insert("policy".into(), raw.clone());
    both.insert("rendered".into(), Value::Object(rendered.clone()));
    let sha = Sha256::digest(go_json(&Value::Object(both), None).as_bytes());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    rendered.insert("sha256".into(), hex.into());
    let mut out = Map::new();
    out.insert("policy".into(), raw);
    out.insert("rendered".into(), Value::Object(rendered));
    Ok(Value::Object(out))
}

/// [`values`] as a values file: a comment header, then JSON (which is YAML,
/// and quotes every string, so no YAML 1.1 reading can change a value).
pub fn render(src: &str, file: &str, target: &Target) -> Result<String, HelmValuesError> {
    let v = values(src, file, target)?;
    Ok(format!(
        "# Generated by `runner-fence render helm-values` from {file}; do not edit by hand.\n\
         # Pass it to the chart with `-f`. `rendered` is generated from `policy`; the chart\n\
         # refuses to install when they disagree, so edit the policy file and run the command again.\n\
         {}\n",
        go_json(&v, Some(0))
    ))
}

fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Numbers must survive float64 and print the same through Go's encoder.
fn check_numbers(v: &Value, file: &str, path: &mut String) -> Result<(), HelmValuesError> {
    match v {
        Value::Number(n) => {
            let ok = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => (i as f64).abs() <= MAX_EXACT,
                (_, Some(u), _) => (u as f64) <= MAX_EXACT,
                (_, _, Some(f)) => f == 0.0 || (1e-6..MAX_EXACT).contains(&f.abs()),
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(HelmValuesError::Number {
                    file: file.to_string(),
                    path: if path.is_empty() {
                        "/".into()
                    } else {
                        path.clone()
                    },
                    value: n.to_string(),
                })
            }
        }
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| below(path, k, |path| check_numbers(v, file, path))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| below(path, i, |path| check_numbers(v, file, path))),
        _ => Ok(()),
    }
}

/// Runs `f` with `/segment` appended to `path`, then restores it.
fn below<T>(
    path: &mut String,
    segment: impl std::fmt::Display,
    f: impl FnOnce(&mut String) -> T,
) -> T {
    let len = path.len();
    path.push_str(&format!("/{segment}"));
    let r = f(path);
    path.truncate(len);
    r
}

/// JSON exactly as Go's `encoding/json` (Helm's `toJson`) writes it: keys
/// sorted bytewise, `<`, `>`, `&`, U+2028 and U+2029 escaped, integral floats
/// without a fraction. `indent`: pretty-print from that depth (not Go's
/// format, only used for the values file, which is read back as YAML).
pub fn go_json(v: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_go_json(v, indent, &mut out);
    out
}

fn write_go_json(v: &Value, indent: Option<usize>, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            // Go prints float64 without exponent in this range, shortest digits.
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() <= MAX_EXACT => {
                out.push_str(&(f as i64).to_string())
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_go_string(s, indent.is_some(), out),
        Value::Array(items) => write_seq(('[', ']'), items.iter(), indent, out, |item, d, out| {
            write_go_json(item, d, out)
        }),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            write_seq(('{', '}'), keys.into_iter(), indent, out, |k, d, out| {
                write_go_string(k, indent.is_some(), out);
                out.push_str(if indent.is_some() { ": " } else { ":" });
                if let Some(item) = map.get(k) {
                    write_go_json(item, d, out);
                }
            })
        }
    }
}

/// `open item,item close`; pretty-printed one item a line when `indent` is set.
fn write_seq<T>(
    (open, close): (char, char),
    items: impl ExactSizeIterator<Item = T>,
    indent: Option<usize>,
    out: &mut String,
    mut item: impl FnMut(T, Option<usize>, &mut String),
) {
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let empty = items.len() == 0;
    out.push(open);
    for (i, it) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(d) = indent {
            newline(out, d + 1);
        }
        item(it, indent.map(|d| d + 1), out);
    }
    if let (Some(d), false) = (indent, empty) {
        newline(out, d);
    }
    out.push(close);
}

/// `yaml`: also escape what YAML does not allow raw (C1 controls, NEL, which it
/// reads as a line break, U+FFFE/U+FFFF); the value read back is the same.
fn write_go_string(s: &str, yaml: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => escape_u(c, out),
            '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}' if yaml => escape_u(c, out),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn escape_u(c: char, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = c as u32;
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((n >> shift) & 0xf) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_json_escapes_like_encoding_json() {
        // Expected strings are what Go 1.26's json.Marshal writes for these values.
        let v = json!({"b": "<a&b>\u{2028}\u{1}\u{8}\n", "a": [1, 2.5, 3.0], "c": {}});
        assert_eq!(
            go_json(&v, None),
            r#"{"a":[1,2.5,3],"b":"\u003ca\u0026b\u003e\u2028\u0001\b\n","c":{}}"#
        );
    }

    #[test]
    fn numbers_helm_would_change_are_refused() {
        let src = "apiVersion: runner-fence.dev/v1alpha1\nkind: RunnerPolicy\nmetadata: {name: x, big: 12345678901234567890}\n";
        let err = check_numbers(
            &serde_saphyr::from_str::<Value>(src).unwrap_or_default(),
            "p.yaml",
            &mut String::new(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("/metadata/big"), "{err}");
    }

    #[test]
    fn nulls_are_dropped_from_maps() {
        let v = without_nulls(json!({"a": null, "b": {"c": null, "d": 1}}));
        assert_eq!(v, json!({"b": {"d": 1}}));
    }
}
