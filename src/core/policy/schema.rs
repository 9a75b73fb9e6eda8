//! The JSON Schema of a policy document (`runner-fence schema`, the chart's
//! `values.schema.json`). It accepts exactly the documents the loader reads
//! into the model; what only the loader checks after that is `load.rs`'s
//! `check` (listed in the README).

use schemars::{Schema, SchemaGenerator, json_schema};

use super::{Mode, Policy, RuleId};

/// The JSON Schema of a policy document (a `Schema` serializes its keys in
/// the order they were written, a JSON value sorts them).
pub fn json_schema() -> Schema {
    schemars::schema_for!(Policy)
}

/// `rules`: a mode per rule id, and nothing else (a map keyed by an enum would
/// accept any key).
pub(super) fn rules(g: &mut SchemaGenerator) -> Schema {
    let mode = g.subschema_for::<Mode>().to_value();
    let properties: serde_json::Map<String, serde_json::Value> = RuleId::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), mode.clone()))
        .collect();
    json_schema!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The schema and the loader agree on documents generated from the schema
/// and around the reference policy, valid or changed, written as JSON and as
/// YAML: what the schema accepts the loader reads, what it rejects the loader
/// rejects. Left out on purpose: the semantic checks after reading
/// (`load.rs`'s `check`, listed in the README), which may reject a document
/// the schema accepts, and the removed exemption fields (`match.podNamePrefixes`,
/// `requireLabels`, `exclude`), rejected by both but only the loader says what
/// to write instead; the generator never writes those names.
#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::Union;
    use serde_json::{Map, Value, json};

    use super::json_schema;
    use crate::core::policy::{EMBEDDED_POLICY, LoadError, Policy, parse, yaml};

    /// Strings the generator writes: names, YAML 1.1 booleans and numbers as
    /// text, the empty string, odd characters.
    const STRINGS: &[&str] = &[
        "gitlab-runner",
        "workload",
        "runner-nodes",
        "fargate",
        "yes",
        "no",
        "on",
        "true",
        "True",
        "1",
        "0.5",
        "null",
        "",
        "a b",
        "ci-job-*",
        "enforce",
    ];
    /// Quantities (the schema's pattern): valid, negative, and one it rejects.
    const QUANTITIES: &[&str] = &["500m", "2", "1.5", "8Gi", "1e3", "-1", "0", "2 cores"];

    fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
        match schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => &root["$defs"][name],
            None => schema,
        }
    }

    fn one_of(options: Vec<BoxedStrategy<Value>>) -> BoxedStrategy<Value> {
        Union::new(options).boxed()
    }

    fn pick(values: Vec<Value>) -> BoxedStrategy<Value> {
        proptest::sample::select(values).boxed()
    }

    /// Instances of `schema`: mostly valid (every required property, some of
    /// the optional ones), never deeper than the schema.
    fn instance(schema: &Value, root: &Value) -> BoxedStrategy<Value> {
        let schema = resolve(schema, root);
        if let Some(c) = schema.get("const") {
            return Just(c.clone()).boxed();
        }
        if let Some(e) = schema["enum"].as_array() {
            return pick(e.clone());
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = schema[key].as_array() {
                return one_of(alts.iter().map(|s| instance(s, root)).collect());
            }
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec!["string", "integer", "object"],
        };
        one_of(
            types
                .into_iter()
                .map(|t| of_type(t, schema, root))
                .collect(),
        )
    }

    fn of_type(t: &str, schema: &Value, root: &Value) -> BoxedStrategy<Value> {
        match t {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
            "integer" => pick(vec![json!(0), json!(30), json!(-5), json!(7.0)]),
            "number" => pick(vec![json!(2), json!(0.5), json!(-1), json!(1000)]),
            "string" if schema.get("pattern").is_some() => {
                pick(QUANTITIES.iter().map(|q| json!(q)).collect())
            }
            "string" => pick(STRINGS.iter().map(|s| json!(s)).collect()),
            "array" => {
                let items = instance(&schema["items"], root);
                let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
                proptest::collection::vec(items, min..min + 3)
                    .prop_map(Value::Array)
                    .boxed()
            }
            _ => object(schema, root),
        }
    }

    fn object(schema: &Value, root: &Value) -> BoxedStrategy<Value> {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
        for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
            let name = name.clone();
            let value = instance(prop, root);
            let field = if required.contains(&name.as_str()) {
                value.prop_map(move |v| Some((name.clone(), v))).boxed()
            } else {
                proptest::option::weighted(0.6, value)
                    .prop_map(move |v| v.map(|v| (name.clone(), v)))
                    .boxed()
            };
            fields.push(field);
        }
        let extra = match &schema["additionalProperties"] {
            Value::Object(_) => {
                let keys = proptest::sample::select(STRINGS.to_vec()).prop_map(String::from);
                let min = schema["minProperties"].as_u64().unwrap_or(0) as usize;
                proptest::collection::btree_map(
                    keys,
                    instance(&schema["additionalProperties"], root),
                    min..min + 3,
                )
                .boxed()
            }
            _ => Just(Default::default()).boxed(),
        };
        (fields, extra)
            .prop_map(|(fields, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().collect();
                m.extend(fields.into_iter().flatten());
                Value::Object(m)
            })
            .boxed()
    }

    /// One change at one node of a document.
    #[derive(Clone, Debug)]
    enum Mutation {
        /// A scalar written as another type with the same text (`true` as
        /// `"true"`, `"yes"` or `1`; a string as a plain number, boolean or null).
        Confuse(usize),
        /// Any node replaced by this value.
        Replace(Value),
        /// An unknown key added to a mapping.
        AddKey,
        /// A key removed from a mapping (required or not).
        RemoveKey,
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            3 => any::<usize>().prop_map(Mutation::Confuse),
            1 => proptest::sample::select(vec![
                json!("yes"),
                json!(true),
                json!(1),
                json!(1.5),
                json!(Value::Null),
                json!([]),
                json!({}),
                json!(["x"]),
            ])
            .prop_map(Mutation::Replace),
            1 => Just(Mutation::AddKey),
            1 => Just(Mutation::RemoveKey),
        ]
    }

    /// JSON pointers of every node, in document order.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    pointers(c, format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    pointers(c, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn confused(v: &Value, pick: usize) -> Value {
        let options = match v {
            Value::Bool(b) => vec![
                json!(b.to_string()),
                json!(if *b { "yes" } else { "no" }),
                json!(u8::from(*b)),
            ],
            Value::Number(n) => vec![json!(n.to_string()), json!(true)],
            Value::String(s) => {
                let number = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
                vec![
                    number.map_or(json!(1), Value::Number),
                    json!(true),
                    Value::Null,
                    json!([s]),
                ]
            }
            Value::Null => vec![json!("null"), json!({})],
            _ => vec![json!("yes")],
        };
        options[pick % options.len()].clone()
    }

    fn applies(doc: &Value, ptr: &str, m: &Mutation) -> bool {
        let v = doc.pointer(ptr);
        match m {
            Mutation::Confuse(_) => v.is_some_and(|v| !v.is_object() && !v.is_array()),
            Mutation::AddKey | Mutation::RemoveKey => v.is_some_and(Value::is_object),
            Mutation::Replace(_) => true,
        }
    }

    /// Applies `m` at the `n`th node it applies to, wrapping around.
    fn mutate(doc: &mut Value, n: usize, m: &Mutation) {
        let mut all = Vec::new();
        pointers(doc, String::new(), &mut all);
        all.retain(|p| applies(doc, p, m));
        if let Some(ptr) = all.get(n % all.len().max(1)) {
            mutate_at(doc, ptr, m, n);
        }
    }

    /// Applies `m` at `ptr`; `key` chooses the key `RemoveKey` removes.
    fn mutate_at(doc: &mut Value, ptr: &str, m: &Mutation, key: usize) {
        let Some(v) = doc.pointer_mut(ptr) else {
            return;
        };
        match (m, v) {
            (Mutation::Confuse(pick), v) => *v = confused(v, *pick),
            (Mutation::Replace(r), v) => *v = r.clone(),
            (Mutation::AddKey, Value::Object(o)) => {
                o.insert("unknownField".into(), json!("x"));
            }
            (Mutation::RemoveKey, Value::Object(o)) => {
                let keys: Vec<String> = o.keys().cloned().collect();
                if !keys.is_empty() {
                    o.remove(&keys[key % keys.len()]);
                }
            }
            _ => {}
        }
    }

    fn schema_accepts(v: &Value) -> bool {
        thread_local! {
            static VALIDATOR: jsonschema::Validator =
                jsonschema::validator_for(json_schema().as_value()).expect("the schema compiles");
        }
        VALIDATOR.with(|val| val.is_valid(v))
    }

    /// Reading the document into the policy model, and the whole loader.
    fn loader(text: &str) -> (Result<(), String>, Result<(), String>) {
        let shown = |e: LoadError| e.to_string();
        let read = yaml::from_str::<Policy>(text, "doc")
            .map(drop)
            .map_err(shown);
        // Reading is parse's first step: a document it cannot read does not load.
        let loaded = match &read {
            Ok(()) => parse(text, "doc").map(drop).map_err(shown),
            Err(e) => Err(e.clone()),
        };
        (read, loaded)
    }

    /// Both written forms of a document, each with what the schema sees of it:
    /// JSON as it is, YAML read as YAML 1.2 core data.
    fn forms(doc: &Value) -> Vec<(String, Value)> {
        let json = serde_json::to_string(doc).unwrap_or_default();
        let yaml = serde_saphyr::to_string(doc).unwrap_or_default();
        let seen = serde_saphyr::from_str_with_options::<Value>(
            &yaml,
            crate::core::scalar::yaml_options(),
        )
        .unwrap_or(Value::String("unreadable".into()));
        vec![(json, doc.clone()), (yaml, seen)]
    }

    fn valid_documents() -> BoxedStrategy<Value> {
        let schema = json_schema().to_value();
        instance(&schema, &schema)
            .prop_filter("valid", schema_accepts)
            .boxed()
    }

    /// The reference policy as the schema sees it.
    fn reference() -> Value {
        serde_saphyr::from_str_with_options(EMBEDDED_POLICY, crate::core::scalar::yaml_options())
            .unwrap_or_default()
    }

    fn documents() -> impl Strategy<Value = Value> {
        let schema = json_schema().to_value();
        let valid = instance(&schema, &schema);
        let around_reference = (any::<usize>(), mutation()).prop_map(|(n, m)| {
            let mut doc = reference();
            mutate(&mut doc, n, &m);
            doc
        });
        let mutated = (
            instance(&schema, &schema),
            any::<usize>(),
            mutation(),
            1..3usize,
        )
            .prop_map(|(mut doc, n, m, times)| {
                for i in 0..times {
                    mutate(&mut doc, n.wrapping_mul(i + 1), &m);
                }
                doc
            });
        prop_oneof![valid, mutated, around_reference]
    }

    /// What the schema accepts the loader reads (the semantic checks may
    /// still reject it), and what the schema rejects the loader rejects.
    fn assert_agree(doc: &Value) -> Result<(), TestCaseError> {
        for (text, seen) in forms(doc) {
            let (read, loaded) = loader(&text);
            if schema_accepts(&seen) {
                prop_assert!(
                    read.is_ok(),
                    "the schema accepts, the loader cannot read it: {:?}\n{}",
                    read,
                    text
                );
            } else {
                prop_assert!(
                    loaded.is_err(),
                    "the schema rejects, the loader accepts\n{}",
                    text
                );
            }
        }
        Ok(())
    }

    /// Every single change of `doc`: each scalar confused in each way, an
    /// unknown key in each mapping, each key of each mapping removed, each
    /// list replaced by a mapping.
    fn single_changes(doc: &Value) -> Vec<Value> {
        let mut all = Vec::new();
        pointers(doc, String::new(), &mut all);
        let mut out = Vec::new();
        for ptr in &all {
            let changes: Vec<(Mutation, usize)> = match doc.pointer(ptr) {
                Some(Value::Object(o)) => std::iter::once((Mutation::AddKey, 0))
                    .chain((0..o.len()).map(|k| (Mutation::RemoveKey, k)))
                    .collect(),
                Some(Value::Array(_)) => vec![(Mutation::Replace(json!({})), 0)],
                _ => (0..4).map(|i| (Mutation::Confuse(i), 0)).collect(),
            };
            for (m, key) in changes {
                let mut changed = doc.clone();
                mutate_at(&mut changed, ptr, &m, key);
                out.push(changed);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn the_schema_and_the_loader_accept_the_same_documents(doc in documents()) {
            assert_agree(&doc)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        #[test]
        fn and_every_single_change_of_a_generated_document(doc in valid_documents()) {
            for changed in single_changes(&doc) {
                assert_agree(&changed)?;
            }
        }
    }

    #[test]
    fn every_single_change_of_the_reference_policy() {
        let doc = reference();
        let changes = single_changes(&doc);
        let loaded = changes
            .iter()
            .filter(|d| parse(&serde_json::to_string(d).unwrap_or_default(), "doc").is_ok())
            .count();
        // Removing an optional key or confusing nothing that matters keeps a working policy.
        assert!(
            loaded > 5,
            "only {loaded} of {} changes load",
            changes.len()
        );
        for changed in changes {
            if let Err(e) = assert_agree(&changed) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn the_generator_writes_valid_documents_often_and_the_reference_policy_is_one() {
        use proptest::strategy::ValueTree;
        let schema = json_schema().to_value();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = instance(&schema, &schema);
        let valid = (0..200)
            .filter(|_| {
                let doc = strategy.new_tree(&mut runner).map(|t| t.current());
                doc.is_ok_and(|d| schema_accepts(&d))
            })
            .count();
        assert!(
            valid >= 100,
            "only {valid} of 200 generated documents are valid"
        );
        let reference: Value = serde_saphyr::from_str_with_options(
            EMBEDDED_POLICY,
            crate::core::scalar::yaml_options(),
        )
        .expect("yaml");
        assert!(schema_accepts(&reference));
    }
}
