//! The policy as a Kubernetes object (SPEC §12): a `RunnerFencePolicy` whose
//! `spec` holds the fields a plain `RunnerPolicy` file has at its top level.
//!
//! Both layouts go through one model and one set of checks: the object's
//! `spec` is deserialized into [`Policy`] itself, with `apiVersion`, `kind`
//! and `metadata` supplied from the object, so field paths (`spec.placement.default`)
//! and line:column positions point into the document as written.

use std::fmt;

use serde::Deserialize;
use serde::de::value::{MapDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};

use super::super::locate::{Seg, locate};
use super::super::{API_VERSION, KIND, Policy};
use super::{LoadError, checked, deserialize};

/// API group of the custom resource.
pub const GROUP: &str = "runner-fence.dev";
/// Version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// `kind` of the custom resource.
pub const OBJECT_KIND: &str = "RunnerFencePolicy";
/// Plural resource name (`kubectl get runnerfencepolicies`).
pub const PLURAL: &str = "runnerfencepolicies";

/// Fields of the plain layout that the object carries outside `spec`.
const HEADER: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Whether `src` is a `RunnerFencePolicy` document (anything else, broken
/// text included, is read as a plain policy file and reported as such).
pub(super) fn is_object(src: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    serde_saphyr::from_str::<Kind>(src).is_ok_and(|k| k.kind.as_deref() == Some(OBJECT_KIND))
}

/// Parses and checks a `RunnerFencePolicy` document: the same checks as a
/// plain file, with paths under `spec.`.
pub(super) fn parse(src: &str, file: &str) -> Result<Policy, LoadError> {
    let object: Object = deserialize(src, file)?;
    let header_error = |field: &str, message: String| {
        let path = [Seg::Key(field.to_string())];
        let (line, column) = locate(src, &path).unzip();
        LoadError {
            file: file.to_string(),
            line,
            column,
            path: field.to_string(),
            message,
        }
    };
    if object.api_version != API_VERSION {
        return Err(header_error(
            "apiVersion",
            format!("must be {API_VERSION}, got {:?}", object.api_version),
        ));
    }
    if object.metadata.name.is_empty() {
        return Err(header_error("metadata", "must have a name".into()));
    }
    let mut policy = object.spec;
    policy.metadata.name = object.metadata.name;
    checked(policy, src, file, &[Seg::Key("spec".into())])
}

/// A `RunnerFencePolicy` document as written (or as `kubectl get -o yaml` prints it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Object {
    /// Must be `runner-fence.dev/v1alpha1`.
    pub api_version: String,
    /// `RunnerFencePolicy`.
    #[allow(dead_code)]
    pub kind: String,
    /// Only the name matters here; the rest (labels, uid, ...) is the apiserver's.
    pub metadata: ObjectMeta,
    /// The policy.
    #[serde(deserialize_with = "spec")]
    pub spec: Policy,
    /// Written by runner-fence; ignored when loading.
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// `metadata` of the object.
#[derive(Deserialize)]
pub(super) struct ObjectMeta {
    /// The policy's name.
    #[serde(default)]
    pub name: String,
}

/// `spec` into [`Policy`]: the header fields are supplied, the rest is the map as written.
fn spec<'de, D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
    Policy::deserialize(Spec(d))
}

/// A deserializer that hands the `Policy` visitor the spec map with the header prepended.
struct Spec<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Spec<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(SpecVisitor(visitor, fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct SpecVisitor<V>(V, &'static [&'static str]);

impl<'de, V: Visitor<'de>> Visitor<'de> for SpecVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the policy's fields (mode, match, protectedNodes, placement, ...) as a mapping",
        )
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<V::Value, M::Error> {
        self.0.visit_map(SpecMap {
            map,
            fields: self.1,
            next_header: 0,
        })
    }
}

/// The spec's entries after the three header entries.
struct SpecMap<M> {
    map: M,
    /// The policy's fields, header included.
    fields: &'static [&'static str],
    next_header: usize,
}

impl<'de, M: MapAccess<'de>> MapAccess<'de> for SpecMap<M> {
    type Error = M::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, M::Error> {
        match HEADER.get(self.next_header) {
            Some(k) => seed
                .deserialize(StrDeserializer::<M::Error>::new(k))
                .map(Some),
            None => self.map.next_key_seed(SpecKey(seed, self.fields)),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, M::Error> {
        let i = self.next_header;
        if i >= HEADER.len() {
            return self.map.next_value_seed(seed);
        }
        self.next_header += 1;
        match i {
            0 => seed.deserialize(StrDeserializer::new(API_VERSION)),
            1 => seed.deserialize(StrDeserializer::new(KIND)),
            // The name is the object's; set after deserializing.
            _ => seed.deserialize(MapDeserializer::new([("name", "")].into_iter())),
        }
    }
}

/// A spec key: one of the policy's fields, but not `apiVersion`, `kind` or
/// `metadata`, which belong to the object.
struct SpecKey<K>(K, &'static [&'static str]);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for SpecKey<K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        let key = String::deserialize(d)?;
        if HEADER.contains(&key.as_str()) {
            return Err(de::Error::custom(format_args!(
                "unknown field `{key}`: in a {OBJECT_KIND} it belongs at the top level, beside spec"
            )));
        }
        if !self.1.contains(&key.as_str()) {
            let expected: Vec<&str> = self
                .1
                .iter()
                .copied()
                .filter(|f| !HEADER.contains(f))
                .collect();
            return Err(de::Error::custom(format_args!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )));
        }
        self.0
            .deserialize(IntoDeserializer::<D::Error>::into_deserializer(key))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{EMBEDDED_POLICY, parse};
    use rstest::rstest;

    /// The reference policy as a RunnerFencePolicy (the checked-in example).
    fn object() -> String {
        include_str!("../../../../examples/runnerfencepolicy.yaml").to_string()
    }

    #[test]
    fn broken_yaml_in_an_object_is_said_before_any_field() {
        // A tab deep in the spec: the YAML error and its position, not the
        // plain-file read's "unknown field spec" that meets `spec` first.
        let mut lines: Vec<String> = object().lines().map(String::from).collect();
        let at = lines.len() - 2;
        lines[at] = format!("\t{}", lines[at].trim_start());
        let e = parse(&lines.join("\n"), "rfp.yaml").expect_err("tab");
        assert!(e.message.contains("tabs disallowed"), "{e:?}");
        assert_eq!(e.line, Some(at as u64 + 1), "{e:?}");
        // Two objects in one file given where one policy is read.
        let two = format!("{}\n---\n{}", object(), object());
        let e = parse(&two, "rfp.yaml").expect_err("two documents");
        assert!(e.message.contains("a second YAML document"), "{e:?}");
    }

    #[test]
    fn the_object_is_the_reference_policy() {
        let plain = parse(EMBEDDED_POLICY, "plain").expect("plain");
        let obj = parse(&object(), "object").expect("object");
        assert_eq!(obj.content_hash(), plain.content_hash());
        assert_eq!(obj.metadata.name, "gitlab-runner-jobs");
    }

    #[test]
    fn what_kubectl_get_prints_loads() {
        let served = object().replacen(
            "  name: gitlab-runner-jobs\n",
            "  name: team-a\n  uid: 0b5c\n  generation: 3\n  resourceVersion: \"812\"\n  finalizers: [runner-fence.dev/keep-enforced]\n  annotations: {a: b}\n",
            1,
        ) + "status:\n  observedGeneration: 3\n  conditions: [{type: Ready, status: \"True\"}]\n";
        let p = parse(&served, "served").expect("loads");
        assert_eq!(p.metadata.name, "team-a");
    }

    #[rstest]
    #[case::semantic(
        "default: runner-nodes",
        "default: nope",
        "spec.placement.default",
        "known profiles: fargate, runner-nodes",
        "default: nope"
    )]
    #[case::unknown_spec_field(
        "  allowNodeName: false",
        "  allowNodeNames: false",
        "spec.allowNodeNames",
        "expected one of mode, rules, match",
        "allowNodeNames"
    )]
    #[case::header_in_spec(
        "  mode: enforce",
        "  kind: RunnerPolicy\n  mode: enforce",
        "spec.kind",
        "belongs at the top level",
        "kind: RunnerPolicy"
    )]
    #[case::bad_quantity(
        "cpu: 500m",
        "cpu: 2 cores",
        "spec.resources.defaults.build.cpu",
        "invalid quantity",
        "2 cores"
    )]
    #[case::wrong_api_version(
        "apiVersion: runner-fence.dev/v1alpha1",
        "apiVersion: runner-fence.dev/v2",
        "apiVersion",
        "must be runner-fence.dev/v1alpha1",
        "v2"
    )]
    #[case::unknown_top_level("spec:\n", "specs: {}\nspec:\n", "specs", "unknown field", "specs")]
    #[case::spec_not_a_map("spec:\n", "spec: 3\nx:\n", "spec", "", "spec: 3")]
    fn broken_objects_are_located_under_spec(
        #[case] from: &str,
        #[case] to: &str,
        #[case] path: &str,
        #[case] message: &str,
        #[case] on_line: &str,
    ) {
        let src = object();
        assert!(src.contains(from), "{from:?} not in the example");
        let broken = src.replacen(from, to, 1);
        let e = parse(&broken, "rfp.yaml").expect_err("rejected");
        assert_eq!(e.path, path, "{e}");
        assert!(e.to_string().contains(message), "{e}");
        let line = e
            .line
            .and_then(|l| broken.lines().nth(l as usize - 1))
            .unwrap_or("");
        assert!(line.contains(on_line), "line {line:?} for {e}");
    }

    #[test]
    fn an_object_without_a_name_is_rejected() {
        let broken = object().replacen("  name: gitlab-runner-jobs\n", "  labels: {a: b}\n", 1);
        let e = parse(&broken, "rfp.yaml").expect_err("no name");
        assert!(e.to_string().contains("metadata: must have a name"), "{e}");
    }
}
