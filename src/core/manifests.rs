//! Policies among the YAML documents of a repository: a GitOps tree where
//! `RunnerFencePolicy` objects sit in multi-document files beside other
//! Kubernetes objects. Each policy document is judged with the one loader,
//! and the objects together as the controller judges them (`core::fleet`),
//! so `runner-fence lint` says what `status.conditions` would say.
//!
//! Pure: the caller reads the files and hands over their text.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::document::split_stream;
use crate::core::fleet::{self, Candidate, State};
use crate::core::policy::{self, GROUP, KIND, LoadError, OBJECT_KIND, lint, parse_data};

/// One file's text and the name it is reported under.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// File name, as given or found.
    pub file: &'a str,
    /// Its text.
    pub text: &'a str,
}

/// Which policy layout a document has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A plain `RunnerPolicy` file (`serve --policy`).
    Plain,
    /// A `RunnerFencePolicy` object (the controller's).
    Object,
}

impl Kind {
    /// The document's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => KIND,
            Kind::Object => OBJECT_KIND,
        }
    }
}

/// Why a policy document cannot be applied as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not YAML: its kind is unknown.
    Yaml,
    /// Does not load (the controller's `Invalid`).
    Invalid,
    /// Claims a namespace an earlier policy reviews (the controller's `Conflict`).
    Conflict,
    /// A second object of the same name (one would replace the other).
    Duplicate,
}

impl Reason {
    /// As printed; `Invalid` and `Conflict` are the controller's condition reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Yaml => "invalid YAML",
            Reason::Invalid => State::Invalid.as_str(),
            Reason::Conflict => State::Conflict.as_str(),
            Reason::Duplicate => "Duplicate",
        }
    }
}

/// What is wrong with a policy document, and where in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which kind of problem.
    pub reason: Reason,
    /// What is wrong and the fix (for an object: the condition message).
    pub message: String,
    /// 1-based line in the file, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
}

/// The judgement of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Loads, no lint finding.
    Ok,
    /// Loads, with lint findings (`path: message`, paths under `spec.` for an object).
    Warnings(Vec<String>),
    /// Cannot be applied.
    Broken(Problem),
}

/// One policy document (or one that is not YAML, which may be one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub file: String,
    /// 1-based document index in the file (empty documents not counted).
    pub doc: usize,
    /// `None`: not YAML, so the kind is unknown.
    pub kind: Option<Kind>,
    /// `metadata.name` (empty when it has none).
    pub name: String,
    /// The judgement.
    pub outcome: Outcome,
}

/// Whether a document is a policy, and which layout: `kind` `RunnerPolicy`
/// or `RunnerFencePolicy` of the `runner-fence.dev` group (or with no
/// `apiVersion`, which the loader then reports). Everything else is another
/// object of the repository.
pub fn kind_of(doc: &Value) -> Option<Kind> {
    let kind = match doc.get("kind")?.as_str()? {
        k if k == KIND => Kind::Plain,
        k if k == OBJECT_KIND => Kind::Object,
        _ => return None,
    };
    let ours = match doc.get("apiVersion") {
        None => true,
        Some(v) => v
            .as_str()
            .is_some_and(|v| v.split('/').next() == Some(GROUP)),
    };
    ours.then_some(kind)
}

/// A path the controller sees (the object's `spec`); anything else (the
/// header: `apiVersion`, `metadata`, unknown top-level fields) is rejected
/// by the apiserver before the controller sees the object.
fn under_spec(path: &str) -> bool {
    path == "spec" || path.starts_with("spec.") || path.starts_with("spec[")
}

/// A load error of a document starting `offset` lines into its file.
/// A load error as a problem; with no `offset` (an item of a `List`, read
/// back as JSON) the positions would not be the file's, so there are none.
fn problem(reason: Reason, e: &LoadError, offset: Option<u64>) -> Problem {
    Problem {
        reason,
        message: fleet::load_message(e),
        line: e.line.zip(offset).map(|(l, o)| l + o),
        column: offset.and(e.line).and(e.column),
    }
}

/// One document to judge: its index in the file, its text and the line it
/// starts at (none for an item of a `List`).
struct Doc<'a> {
    index: usize,
    text: std::borrow::Cow<'a, str>,
    line_offset: Option<u64>,
}

/// The documents of a source, a `v1` `List` (what `kubectl get -o yaml`
/// prints for several objects) opened into its items, each under the List's
/// document index.
fn documents<'a>(s: &Source<'a>) -> Vec<Doc<'a>> {
    let mut out = Vec::new();
    for d in split_stream(s.text) {
        let items = parse_data(d.text, s.file).ok().and_then(|v| {
            let list = v.get("kind").and_then(Value::as_str) == Some("List")
                && v.get("apiVersion").and_then(Value::as_str) == Some("v1");
            list.then(|| v.get("items").and_then(Value::as_array).cloned())
                .flatten()
        });
        match items {
            Some(items) => out.extend(items.iter().map(|item| {
                Doc {
                    index: d.index,
                    text: serde_json::to_string_pretty(item)
                        .unwrap_or_default()
                        .into(),
                    line_offset: None,
                }
            })),
            None => out.push(Doc {
                index: d.index,
                text: d.text.into(),
                line_offset: Some(d.line_offset),
            }),
        }
    }
    out
}

/// Where the text loader found an object's first error.
struct Located {
    path: String,
    line: Option<u64>,
    column: Option<u64>,
}

/// An object waiting for the set judgement.
struct Slot {
    /// Its finding (filled in from the verdict).
    finding: usize,
    /// Where the text-level loader located its first error, if any.
    at: Option<Located>,
    /// The loaded spec, for the lint.
    spec: Option<policy::Policy>,
}

/// Judges every policy document of `sources`, in order. Plain policies are
/// judged alone; `RunnerFencePolicy` objects also together, as the
/// controller would if they were created in this order (files, then
/// documents): a later object claiming a namespace of an earlier one is a
/// `Conflict`, a second object of one name a `Duplicate`.
pub fn judge(sources: &[Source<'_>]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut names: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for s in sources {
        for d in documents(s) {
            let mut finding = Finding {
                file: s.file.to_string(),
                doc: d.index,
                kind: None,
                name: String::new(),
                outcome: Outcome::Ok,
            };
            let value = match parse_data(&d.text, s.file) {
                Ok(v) => v,
                Err(e) => {
                    finding.outcome = Outcome::Broken(problem(Reason::Yaml, &e, d.line_offset));
                    findings.push(finding);
                    continue;
                }
            };
            let Some(kind) = kind_of(&value) else {
                continue;
            };
            finding.kind = Some(kind);
            finding.name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let loaded = policy::parse(&d.text, s.file);
            match (kind, loaded) {
                (Kind::Plain, Ok(p)) => finding.outcome = warnings(&p, ""),
                (Kind::Plain, Err(e)) => {
                    finding.outcome = Outcome::Broken(problem(Reason::Invalid, &e, d.line_offset));
                }
                // The apiserver refuses a nameless object, whatever its spec says.
                (Kind::Object, _) if finding.name.is_empty() => {
                    finding.outcome = Outcome::Broken(Problem {
                        reason: Reason::Invalid,
                        message: "metadata: must have a name".into(),
                        line: None,
                        column: None,
                    });
                }
                (Kind::Object, Err(e)) if !under_spec(&e.path) => {
                    finding.outcome = Outcome::Broken(problem(Reason::Invalid, &e, d.line_offset));
                }
                (Kind::Object, loaded) => {
                    if let Some((file, doc)) = names.get(&finding.name) {
                        finding.outcome = Outcome::Broken(Problem {
                            reason: Reason::Duplicate,
                            message: format!(
                                "metadata.name: {OBJECT_KIND} {} is also defined at {file}:{doc}; names are unique in a cluster (applying both, the later replaces the earlier); rename one or remove one",
                                finding.name
                            ),
                            line: None,
                            column: None,
                        });
                    } else {
                        names.insert(finding.name.clone(), (s.file.to_string(), d.index));
                        let spec = value.get("spec").cloned().unwrap_or(Value::Null);
                        let loaded_spec = fleet::load_object(&finding.name, &spec);
                        slots.insert(
                            finding.name.clone(),
                            Slot {
                                finding: findings.len(),
                                at: loaded.err().map(|e| Located {
                                    path: e.path,
                                    line: e.line.zip(d.line_offset).map(|(l, o)| l + o),
                                    column: d.line_offset.and(e.line).and(e.column),
                                }),
                                spec: loaded_spec.clone().ok(),
                            },
                        );
                        candidates.push(Candidate {
                            name: finding.name.clone(),
                            // Creation order is the order given.
                            created: candidates.len() as i64,
                            generation: 1,
                            spec: loaded_spec,
                            spec_json: spec,
                            enforced: None,
                            enforced_json: None,
                            deleting: false,
                            removal_allowed: false,
                        });
                    }
                }
            }
            findings.push(finding);
        }
    }
    for v in fleet::resolve(candidates).verdicts {
        let Some(slot) = slots.get(&v.name) else {
            continue;
        };
        let Some(finding) = findings.get_mut(slot.finding) else {
            continue;
        };
        finding.outcome = match v.state {
            State::Ready => match &slot.spec {
                Some(p) => warnings(p, "spec."),
                None => Outcome::Ok,
            },
            State::Conflict => Outcome::Broken(Problem {
                reason: Reason::Conflict,
                message: format!(
                    "{}; lint counts a document earlier in the paths given as the older object",
                    v.message
                ),
                line: None,
                column: None,
            }),
            _ => {
                // Where the text loader found the same error: its position in the file.
                let located = slot
                    .at
                    .as_ref()
                    .filter(|at| v.message.starts_with(&format!("{}: ", at.path)));
                Outcome::Broken(Problem {
                    reason: Reason::Invalid,
                    message: v.message,
                    line: located.and_then(|at| at.line),
                    column: located.and_then(|at| at.column),
                })
            }
        };
    }
    findings
}

/// The lint findings of a loaded policy, paths under `prefix` (the words the
/// controller appends to a Ready condition as `lint warning: spec.…`).
fn warnings(p: &policy::Policy, prefix: &str) -> Outcome {
    let w: Vec<String> = lint(p).iter().map(|w| format!("{prefix}{w}")).collect();
    if w.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Warnings(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case::plain(json!({"apiVersion": "runner-fence.dev/v1alpha1", "kind": "RunnerPolicy"}), Some(Kind::Plain))]
    #[case::object(json!({"apiVersion": "runner-fence.dev/v1alpha1", "kind": "RunnerFencePolicy"}), Some(Kind::Object))]
    #[case::other_version_is_ours(json!({"apiVersion": "runner-fence.dev/v2", "kind": "RunnerFencePolicy"}), Some(Kind::Object))]
    #[case::no_api_version(json!({"kind": "RunnerPolicy"}), Some(Kind::Plain))]
    #[case::other_group(json!({"apiVersion": "example.com/v1", "kind": "RunnerPolicy"}), None)]
    #[case::deployment(json!({"apiVersion": "apps/v1", "kind": "Deployment"}), None)]
    #[case::no_kind(json!({"apiVersion": "runner-fence.dev/v1alpha1"}), None)]
    #[case::not_a_mapping(json!(["kind"]), None)]
    fn which_documents_are_policies(#[case] doc: Value, #[case] want: Option<Kind>) {
        assert_eq!(kind_of(&doc), want);
    }

    #[rstest]
    #[case::spec("spec", true)]
    #[case::field("spec.placement.default", true)]
    #[case::header("apiVersion", false)]
    #[case::metadata("metadata", false)]
    #[case::lookalike("specs", false)]
    #[case::whole_document("", false)]
    fn spec_paths(#[case] path: &str, #[case] want: bool) {
        assert_eq!(under_spec(path), want);
    }
}
