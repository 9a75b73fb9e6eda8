//! `render crd`: the `RunnerFencePolicy` CustomResourceDefinition (SPEC §12).
//!
//! Its `spec` schema is the JSON Schema of [`Policy`] (what `runner-fence
//! schema` prints) without the header fields, rewritten into the structural
//! form the apiserver requires: every `$ref` inlined, `Option` as `nullable`,
//! one-of-constants as `enum`, a quantity as int-or-string with its pattern,
//! and nothing the apiserver refuses (`additionalProperties: false`,
//! `uniqueItems`, `$defs`, `default`...). Unknown fields are still refused:
//! the apiserver rejects them under strict field validation (kubectl's
//! default) and the loader rejects them when the controller reads the object.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use serde_json::{Map, Value, json};

use crate::core::policy::{GROUP, OBJECT_KIND, PLURAL, Policy, VERSION};

/// The CRD's name.
pub fn name() -> String {
    format!("{PLURAL}.{GROUP}")
}

/// A part of the policy's JSON Schema the structural form cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy schema at {path} cannot be written as a structural CRD schema: {reason}")]
pub struct SchemaError {
    /// JSON pointer into the policy schema.
    pub path: String,
    /// What is not supported.
    pub reason: String,
}

/// The structural schema of `spec`: the policy's schema less `apiVersion`, `kind`, `metadata`.
pub fn spec_schema() -> Result<Value, SchemaError> {
    let schema = serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or_default();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut spec = structural(&schema, &defs, "")?;
    if let Some(props) = spec.get_mut("properties").and_then(Value::as_object_mut) {
        for header in ["apiVersion", "kind", "metadata"] {
            props.remove(header);
        }
    }
    if let Some(req) = spec.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    if let Some(o) = spec.as_object_mut() {
        o.insert(
            "description".into(),
            "The policy: the fields of a plain RunnerPolicy file (see `runner-fence schema`)."
                .into(),
        );
    }
    Ok(spec)
}

/// What runner-fence writes into `status` (see [`crate::core::fleet::Status`]).
fn status_schema() -> Value {
    let condition = json!({
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "description": "Ready."},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "description": "Ready, Invalid, Conflict, Deleting."},
            "message": {"type": "string", "description": "Why, with the field path and the fix."},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    });
    json!({
        "type": "object",
        "description": "Written by runner-fence.",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64", "description": "The generation the conditions describe."},
            "mode": {"type": "string", "description": "Mode of the spec being enforced."},
            "namespaces": {"type": "string", "description": "Namespaces of the spec being enforced, comma-separated."},
            "enforcedGeneration": {"type": "integer", "format": "int64", "description": "Generation of the spec being enforced (the last valid one)."},
            "enforcedSpec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "description": "The spec being enforced: the last valid one, kept so that an invalid edit or a restart never opens the fence.",
            },
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    })
}

/// The CustomResourceDefinition.
pub fn crd() -> Result<CustomResourceDefinition, SchemaError> {
    let ready = "Ready";
    let column = |name: &str, type_: &str, json_path: String, description: Option<&str>| {
        CustomResourceColumnDefinition {
            name: name.into(),
            type_: type_.into(),
            json_path,
            description: description.map(String::from),
            ..CustomResourceColumnDefinition::default()
        }
    };
    let root = json!({
        "type": "object",
        "description": "A runner-fence policy: which namespaces are fenced and where their pods may run.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema()?,
            "status": status_schema(),
        },
    });
    let open_api_v3_schema = typed_schema(root)?;
    let mut message = column(
        "Message",
        "string",
        format!(".status.conditions[?(@.type==\"{ready}\")].message"),
        None,
    );
    message.priority = Some(1);
    Ok(CustomResourceDefinition {
        metadata: super::metadata(&name()),
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: OBJECT_KIND.into(),
                list_kind: Some(format!("{OBJECT_KIND}List")),
                plural: PLURAL.into(),
                singular: Some(OBJECT_KIND.to_lowercase()),
                short_names: Some(vec!["rfp".into()]),
                categories: None,
            },
            scope: "Cluster".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(vec![
                    column(
                        "Mode",
                        "string",
                        ".status.mode".into(),
                        Some("Mode of the spec being enforced."),
                    ),
                    column(
                        "Namespaces",
                        "string",
                        ".status.namespaces".into(),
                        Some("Namespaces of the spec being enforced."),
                    ),
                    column(
                        "Ready",
                        "string",
                        format!(".status.conditions[?(@.type==\"{ready}\")].status"),
                        None,
                    ),
                    message,
                    column("Age", "date", ".metadata.creationTimestamp".into(), None),
                ]),
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(open_api_v3_schema),
                }),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    })
}

/// The schema, built as JSON Schema data, as the CRD's type: which must carry all
/// of it (its deserialiser would drop a keyword it does not know).
fn typed_schema(schema: Value) -> Result<JSONSchemaProps, SchemaError> {
    let err = |reason: String| SchemaError {
        path: String::new(),
        reason,
    };
    let typed: JSONSchemaProps =
        serde_json::from_value(schema.clone()).map_err(|e| err(e.to_string()))?;
    if serde_json::to_value(&typed).ok().as_ref() != Some(&schema) {
        return Err(err(
            "it uses a keyword a CRD's openAPIV3Schema does not carry".into(),
        ));
    }
    Ok(typed)
}

/// The CRD as YAML, with a header.
pub fn render_yaml() -> Result<String, SchemaError> {
    let crd = serde_json::to_value(crd()?).unwrap_or_default();
    Ok(format!(
        "# Generated by `runner-fence render crd` from the policy model; do not edit by hand.\n---\n{}",
        serde_saphyr::to_string(&crd).unwrap_or_default()
    ))
}

/// Formats the apiserver knows (others are refused or warned about).
const FORMATS: [&str; 6] = ["int32", "int64", "float", "double", "byte", "date-time"];

/// Keywords that say what a value must be and are valid in a structural schema as they are.
const KEPT: [&str; 10] = [
    "description",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "enum",
    "required",
];

/// One schema node in structural form; `at` is its JSON pointer, for errors.
fn structural(node: &Value, defs: &Map<String, Value>, at: &str) -> Result<Value, SchemaError> {
    let err = |reason: &str| SchemaError {
        path: if at.is_empty() { "/".into() } else { at.into() },
        reason: reason.into(),
    };
    let o = match node {
        Value::Object(o) => o,
        // `true`: any value (none in the policy model today).
        Value::Bool(true) => return Ok(json!({"x-kubernetes-preserve-unknown-fields": true})),
        _ => return Err(err("a schema that matches nothing")),
    };
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/$defs/")
            .and_then(|n| defs.get(n))
            .ok_or_else(|| err("a $ref outside $defs"))?;
        let mut inlined = structural(target, defs, r.trim_start_matches('#'))?;
        if let (Some(d), Some(m)) = (o.get("description"), inlined.as_object_mut()) {
            m.insert("description".into(), d.clone());
        }
        return Ok(inlined);
    }
    let mut out = Map::new();
    let mut nullable = false;
    for (k, v) in o {
        match k.as_str() {
            "type" => match v {
                Value::String(_) => {
                    out.insert("type".into(), v.clone());
                }
                Value::Array(types) => {
                    let real: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    nullable |= real.len() < types.len();
                    match real.as_slice() {
                        [one] => {
                            out.insert("type".into(), (*one).clone());
                        }
                        _ => return Err(err("a value of several types")),
                    }
                }
                _ => return Err(err("a malformed type")),
            },
            "const" => {
                out.insert("enum".into(), json!([v]));
            }
            "format" if v.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                out.insert(k.clone(), v.clone());
            }
            "properties" => {
                let mut props = Map::new();
                for (name, s) in v.as_object().into_iter().flatten() {
                    props.insert(
                        name.clone(),
                        structural(s, defs, &format!("{at}/properties/{name}"))?,
                    );
                }
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), structural(v, defs, &format!("{at}/items"))?);
            }
            // `false` (deny_unknown_fields) is not allowed beside properties.
            "additionalProperties" if v.is_object() => {
                out.insert(
                    k.clone(),
                    structural(v, defs, &format!("{at}/additionalProperties"))?,
                );
            }
            "propertyNames" => {
                let names = structural(v, defs, &format!("{at}/propertyNames"))?;
                if let Some(allowed) = names.get("enum").and_then(Value::as_array) {
                    out.insert("x-kubernetes-validations".into(), key_rule(allowed));
                }
            }
            k if KEPT.contains(&k) => {
                out.insert(k.to_string(), v.clone());
            }
            // Annotations and keywords the apiserver does not take.
            _ => {}
        }
    }
    for key in ["oneOf", "anyOf"] {
        let Some(branches) = o.get(key).and_then(Value::as_array) else {
            continue;
        };
        let mut real = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            let s = structural(b, defs, &format!("{at}/{key}/{i}"))?;
            if s.get("type").and_then(Value::as_str) == Some("null") {
                nullable = true;
            } else {
                real.push(s);
            }
        }
        merge_alternatives(&mut out, real).map_err(|r| err(&r))?;
    }
    if nullable {
        out.insert("nullable".into(), true.into());
    }
    Ok(Value::Object(out))
}

/// Alternatives (`oneOf`/`anyOf`) in structural form: one branch is merged in,
/// constants of one type become an `enum`, a string-or-number is int-or-string.
fn merge_alternatives(out: &mut Map<String, Value>, real: Vec<Value>) -> Result<(), String> {
    match real.as_slice() {
        [] => Ok(()),
        [one] => {
            for (k, v) in one.as_object().into_iter().flatten() {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Ok(())
        }
        many => {
            let ty = |s: &Value| s.get("type").and_then(Value::as_str).map(String::from);
            let consts: Option<Vec<Value>> = many
                .iter()
                .map(|s| s.get("enum").and_then(Value::as_array).cloned())
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect());
            let types: Vec<Option<String>> = many.iter().map(ty).collect();
            if let Some(values) = consts
                && types.windows(2).all(|w| w[0] == w[1])
            {
                if let Some(t) = &types[0] {
                    out.insert("type".into(), t.clone().into());
                }
                out.insert("enum".into(), values.into());
                return Ok(());
            }
            let mut sorted: Vec<&str> = types.iter().flatten().map(String::as_str).collect();
            sorted.sort_unstable();
            if sorted == ["number", "string"] || sorted == ["integer", "string"] {
                // A quantity: `2` or `"500m"`; the pattern only applies to strings.
                if let Some(p) = many.iter().find_map(|s| s.get("pattern")) {
                    out.insert("pattern".into(), p.clone());
                }
                out.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
                out.insert("x-kubernetes-int-or-string".into(), true.into());
                return Ok(());
            }
            Err("alternatives that are neither constants nor string-or-number".into())
        }
    }
}

/// The CEL rule that a map's keys are among `allowed` (JSON Schema's `propertyNames`).
fn key_rule(allowed: &[Value]) -> Value {
    let names: Vec<String> = allowed
        .iter()
        .filter_map(Value::as_str)
        .map(crate::core::render::webhooks::cel_string)
        .collect();
    json!([{
        "rule": format!("self.all(k, k in [{}])", names.join(", ")),
        "message": format!("keys must be one of {}", names.join(", ")),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node of a structural schema has a type (or is int-or-string or
    /// preserves unknown fields) and uses no keyword the apiserver refuses.
    fn assert_structural(s: &Value, at: &str) {
        let o = s
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object"));
        for banned in [
            "$ref",
            "$defs",
            "$schema",
            "oneOf",
            "const",
            "default",
            "title",
            "uniqueItems",
        ] {
            assert!(!o.contains_key(banned), "{at}: {banned}");
        }
        assert!(
            o.get("additionalProperties") != Some(&Value::Bool(false)),
            "{at}: additionalProperties: false"
        );
        let typed = o.get("type").is_some_and(Value::is_string)
            || o.contains_key("x-kubernetes-int-or-string")
            || o.contains_key("x-kubernetes-preserve-unknown-fields");
        assert!(typed, "{at}: no type");
        if o.contains_key("anyOf") {
            assert!(o.contains_key("x-kubernetes-int-or-string"), "{at}: anyOf");
        }
        for (k, v) in o
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert_structural(v, &format!("{at}.{k}"));
        }
        for k in ["items", "additionalProperties"] {
            if let Some(v) = o.get(k).filter(|v| v.is_object()) {
                assert_structural(v, &format!("{at}.{k}"));
            }
        }
    }

    #[test]
    fn the_crd_schema_is_structural() {
        let crd = serde_json::to_value(crd().expect("crd")).expect("json");
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_structural(root, "");
        let spec = &root["properties"]["spec"];
        for header in ["apiVersion", "kind", "metadata"] {
            assert!(spec["properties"].get(header).is_none(), "{header} in spec");
        }
        // The model's constraints survive the rewrite.
        let required = spec["required"].as_array().expect("required");
        for f in ["match", "protectedNodes", "placement"] {
            assert!(required.contains(&json!(f)), "{f} not required");
        }
        assert_eq!(
            spec["properties"]["mode"]["enum"],
            json!(["enforce", "audit"])
        );
        let op = &spec["properties"]["protectedNodes"]["properties"]["matchExpressions"]["items"]["properties"]
            ["operator"];
        assert_eq!(
            op["enum"],
            json!(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"])
        );
    }

    #[test]
    fn a_keyword_the_crd_type_would_drop_is_an_error() {
        let ok =
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x$"}}});
        assert!(typed_schema(ok).is_ok());
        let err = typed_schema(json!({"type": "object", "if": {"type": "string"}}))
            .expect_err("`if` is not a CRD keyword");
        assert!(err.reason.contains("does not carry"), "{err}");
    }

    #[test]
    fn every_policy_field_is_in_the_spec_schema() {
        // The same model: the plain schema's fields, less the header, are the spec's.
        let plain = serde_json::to_value(schemars::schema_for!(Policy)).expect("schema");
        let mut want: Vec<&String> = plain["properties"]
            .as_object()
            .expect("props")
            .keys()
            .filter(|k| !["apiVersion", "kind", "metadata"].contains(&k.as_str()))
            .collect();
        let spec = spec_schema().expect("spec");
        let mut got: Vec<&String> = spec["properties"]
            .as_object()
            .expect("props")
            .keys()
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn unsupported_alternatives_are_an_error() {
        let defs = Map::new();
        let s = json!({"anyOf": [{"type": "object"}, {"type": "array"}]});
        let e = structural(&s, &defs, "/x").expect_err("not structural");
        assert_eq!(e.path, "/x");
        let nullable = structural(&json!({"type": ["string", "null"]}), &defs, "").expect("ok");
        assert_eq!(nullable, json!({"type": "string", "nullable": true}));
    }
}
