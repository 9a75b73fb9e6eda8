//! Reading a GitLab Runner configuration: a `config.toml`, or the
//! gitlab-runner Helm chart's values, whose `runners.config` string holds the
//! `[[runners]]` TOML. Only the settings that decide where a job pod may run
//! are read (names as in GitLab Runner's `common/config.go`
//! `KubernetesConfig`); everything else is ignored, as GitLab Runner itself
//! ignores keys it does not know.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A string setting and where it is written.
pub type Text = Option<Spanned<String>>;
/// A `key = "value"` table (node_selector, node_tolerations, pod_labels).
pub type StringMap = Option<Spanned<BTreeMap<String, Spanned<String>>>>;

/// Why a configuration cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// TOML that does not parse, or a setting of the wrong type.
    #[error("{file}:{}: {message}", line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
    Toml {
        /// The file.
        file: String,
        /// 1-based line in the file, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Neither TOML nor the gitlab-runner chart's values.
    #[error(
        "{file}: neither a GitLab Runner config.toml ({toml}) nor gitlab-runner chart values ({yaml})"
    )]
    Unknown {
        /// The file.
        file: String,
        /// Why it is not TOML.
        toml: String,
        /// Why it is not chart values.
        yaml: String,
    },
    /// Chart values without the `runners.config` TOML.
    #[error(
        "{file}: YAML without runners.config: give config.toml, or the gitlab-runner chart's values with the [[runners]] TOML in runners.config"
    )]
    NoRunnersConfig {
        /// The file.
        file: String,
    },
    /// The engine could not review a runner's job pod (a bug, never the file's fault).
    #[error("cannot evaluate the job pod of {runner}: {message}")]
    Engine {
        /// The runner.
        runner: String,
        /// Why.
        message: String,
    },
    /// No `[[runners]]` entry at all.
    #[error("{file}: no [[runners]] entry, so nothing to check")]
    NoRunners {
        /// The file.
        file: String,
    },
}

/// Which kind of file the configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A runner's `config.toml`.
    ConfigToml,
    /// The gitlab-runner Helm chart's values (`runners.config`).
    HelmValues,
}

/// Where something is written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// 1-based line in the file, when known (for chart values: the line of the
    /// values file, when `runners.config` is a literal block scalar).
    pub line: Option<usize>,
    /// 1-based line in the TOML (for config.toml the same as `line`).
    pub toml_line: usize,
    /// The TOML key, e.g. `runners[0].kubernetes.node_selector.workload`.
    pub key: String,
}

/// A read configuration: its runners, and how to turn spans into lines.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// config.toml or chart values.
    pub format: Format,
    /// The `[[runners]]` entries, in file order.
    pub runners: Vec<Runner>,
    /// Chart values: `runners.jobNamespace`, which newer charts' default
    /// `runners.config` puts in `namespace` (`{{ default .Release.Namespace .Values.runners.jobNamespace }}`).
    pub job_namespace: Option<String>,
    toml: String,
    /// Chart values: the line of the values file just before the TOML's first line.
    base_line: Option<usize>,
}

/// One `[[runners]]` entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Runner {
    /// `name`.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// `executor` (the chart registers `kubernetes` when it is not written).
    #[serde(default)]
    pub executor: Option<Spanned<String>>,
    /// `[runners.kubernetes]`.
    #[serde(default)]
    pub kubernetes: Option<Spanned<Kubernetes>>,
}

/// `[runners.kubernetes]`: the settings that decide where and how job pods run.
#[derive(Clone, Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct Kubernetes {
    pub namespace: Text,
    pub namespace_per_job: Option<Spanned<bool>>,
    pub namespace_overwrite_allowed: Text,
    pub privileged: Option<Spanned<bool>>,
    pub build_container_security_context: Option<SecurityContext>,
    pub helper_container_security_context: Option<SecurityContext>,
    pub service_container_security_context: Option<SecurityContext>,
    pub init_permissions_container_security_context: Option<SecurityContext>,
    pub cpu_request: Text,
    pub memory_request: Text,
    pub cpu_limit: Text,
    pub memory_limit: Text,
    pub helper_cpu_request: Text,
    pub helper_memory_request: Text,
    pub helper_cpu_limit: Text,
    pub helper_memory_limit: Text,
    pub service_cpu_request: Text,
    pub service_memory_request: Text,
    pub service_cpu_limit: Text,
    pub service_memory_limit: Text,
    pub pod_cpu_request: Text,
    pub pod_memory_request: Text,
    pub pod_cpu_limit: Text,
    pub pod_memory_limit: Text,
    pub cpu_request_overwrite_max_allowed: Text,
    pub memory_request_overwrite_max_allowed: Text,
    pub helper_cpu_request_overwrite_max_allowed: Text,
    pub helper_memory_request_overwrite_max_allowed: Text,
    pub service_cpu_request_overwrite_max_allowed: Text,
    pub service_memory_request_overwrite_max_allowed: Text,
    pub pod_cpu_request_overwrite_max_allowed: Text,
    pub pod_memory_request_overwrite_max_allowed: Text,
    pub node_selector: StringMap,
    pub node_selector_overwrite_allowed: Text,
    pub node_tolerations: StringMap,
    pub node_tolerations_overwrite_allowed: Text,
    pub affinity: Option<Affinity>,
    pub pod_labels: StringMap,
    pub pod_labels_overwrite_allowed: Text,
    pub service_account_overwrite_allowed: Text,
    #[serde(default)]
    pub pod_spec: Vec<Spanned<PodSpecPatch>>,
    pub volumes: Option<Volumes>,
}

/// `*_container_security_context`: only `privileged` matters here.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecurityContext {
    /// Overrides `[runners.kubernetes] privileged` for this container.
    pub privileged: Option<Spanned<bool>>,
}

/// `affinity`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Affinity {
    /// `affinity.node_affinity`.
    pub node_affinity: Option<NodeAffinity>,
}

/// `affinity.node_affinity`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeAffinity {
    /// `required_during_scheduling_ignored_during_execution`.
    pub required_during_scheduling_ignored_during_execution: Option<Spanned<NodeSelector>>,
}

/// A required node selector.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeSelector {
    /// `node_selector_terms`: OR-ed.
    #[serde(default)]
    pub node_selector_terms: Vec<Spanned<NodeSelectorTerm>>,
}

/// One nodeSelectorTerm.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeSelectorTerm {
    /// `match_expressions`: AND-ed.
    #[serde(default)]
    pub match_expressions: Vec<Spanned<Expression>>,
    /// `match_fields`.
    #[serde(default)]
    pub match_fields: Vec<Spanned<Expression>>,
}

/// A `{key, operator, values}` requirement, as written (GitLab Runner passes
/// the operator through unchecked).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Expression {
    /// `key`.
    #[serde(default)]
    pub key: String,
    /// `operator`.
    #[serde(default)]
    pub operator: String,
    /// `values`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `[[runners.kubernetes.pod_spec]]` (applied when `FF_USE_ADVANCED_POD_SPEC_CONFIGURATION` is on).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodSpecPatch {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `patch`: YAML or JSON.
    pub patch: Text,
    /// `patch_path`: a file on the runner manager's host.
    pub patch_path: Text,
    /// `patch_type`: `strategic` (default), `merge` or `json`.
    pub patch_type: Text,
}

/// `[runners.kubernetes.volumes]`: only hostPath volumes matter here.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Volumes {
    /// `[[runners.kubernetes.volumes.host_path]]`.
    #[serde(default)]
    pub host_path: Vec<Spanned<HostPath>>,
}

/// A hostPath volume.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HostPath {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `host_path` (defaults to `mount_path`).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `mount_path`.
    #[serde(default)]
    pub mount_path: String,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    runners: Vec<Runner>,
}

/// A `[runners.kubernetes]` fragment alone (`render runner-config` output).
#[derive(Deserialize)]
struct RawFragment {
    runners: Runner,
}

#[derive(Deserialize)]
struct RawValues {
    runners: Option<RawChartRunners>,
}

#[derive(Deserialize)]
struct RawChartRunners {
    config: Option<serde_saphyr::Spanned<String>>,
    #[serde(rename = "jobNamespace")]
    job_namespace: Option<String>,
}

impl ConfigFile {
    /// Reads `text` (named `file` in errors): config.toml, or chart values
    /// when it is YAML with `runners.config`.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let toml_err = match toml::from_str::<toml::Table>(text) {
            // TOML: settings of the wrong type are this file's errors.
            Ok(t) => {
                let raw = parse_toml(&t, text).map_err(|e| toml_error(&e, text, None, file))?;
                return Self::new(Format::ConfigToml, raw, text, None, None, file);
            }
            Err(e) => e,
        };
        let values = match serde_saphyr::from_str::<RawValues>(text) {
            Ok(v) => v,
            Err(yaml) => {
                return Err(ConfigError::Unknown {
                    file: file.to_string(),
                    toml: first_line(&toml_error(&toml_err, text, None, file).to_string()),
                    yaml: first_line(&yaml.to_string()),
                });
            }
        };
        let Some(runners) = values.runners else {
            return Err(Self::not_values(&toml_err, text, file));
        };
        let Some(config) = runners.config else {
            return Err(ConfigError::NoRunnersConfig {
                file: file.to_string(),
            });
        };
        let base = literal_block_base(text, config.referenced.line() as usize, &config.value);
        let raw = toml::from_str::<toml::Table>(&config.value)
            .and_then(|t| parse_toml(&t, &config.value))
            .map_err(|e| {
            let mut err = toml_error(&e, &config.value, base, file);
            if let ConfigError::Toml { message, .. } = &mut err {
                *message = format!("runners.config: {message}");
                if config.value.contains("{{") {
                    message.push_str(" (Helm template directives are only understood inside TOML strings; check the values as helm renders them)");
                }
            }
            err
        })?;
        Self::new(
            Format::HelmValues,
            raw,
            &config.value,
            base,
            runners.job_namespace,
            file,
        )
    }

    fn not_values(toml_err: &toml::de::Error, text: &str, file: &str) -> ConfigError {
        // YAML without `runners`: most likely broken TOML, so say what TOML says.
        toml_error(toml_err, text, None, file)
    }

    fn new(
        format: Format,
        raw: RawConfig,
        toml: &str,
        base_line: Option<usize>,
        job_namespace: Option<String>,
        file: &str,
    ) -> Result<Self, ConfigError> {
        if raw.runners.is_empty() {
            return Err(ConfigError::NoRunners {
                file: file.to_string(),
            });
        }
        Ok(ConfigFile {
            format,
            runners: raw.runners,
            job_namespace,
            toml: toml.to_string(),
            base_line,
        })
    }

    /// Where the text at `span` of the TOML is, named `key`.
    pub fn locate(&self, span: Range<usize>, key: impl Into<String>) -> Location {
        let toml_line = line_of(&self.toml, span.start);
        let line = match self.format {
            Format::ConfigToml => Some(toml_line),
            Format::HelmValues => self.base_line.map(|b| b + toml_line),
        };
        Location {
            line,
            toml_line,
            key: key.into(),
        }
    }

    /// The `[[runners]]` entry's own line: its `[runners.kubernetes]` table,
    /// else its name, else the first line.
    pub fn runner_location(&self, index: usize) -> Location {
        let r = self.runners.get(index);
        let span = r
            .and_then(|r| r.kubernetes.as_ref().map(Spanned::span))
            .or_else(|| r.and_then(|r| r.name.as_ref().map(Spanned::span)))
            .unwrap_or(0..0);
        self.locate(span, format!("runners[{index}].kubernetes"))
    }
}

/// `[[runners]]` entries, or the one `[runners.kubernetes]` of a fragment.
fn parse_toml(table: &toml::Table, text: &str) -> Result<RawConfig, toml::de::Error> {
    if table.get("runners").is_some_and(toml::Value::is_table) {
        let one = toml::from_str::<RawFragment>(text)?;
        return Ok(RawConfig {
            runners: vec![one.runners],
        });
    }
    toml::from_str::<RawConfig>(text)
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

fn toml_error(e: &toml::de::Error, toml: &str, base: Option<usize>, file: &str) -> ConfigError {
    let line = e.span().map(|s| line_of(toml, s.start));
    ConfigError::Toml {
        file: file.to_string(),
        line: match base {
            Some(b) => line.map(|l| b + l),
            None if toml.is_empty() => None,
            None => line,
        },
        message: first_line(e.message()),
    }
}

/// For `runners.config: |` (a literal block scalar, the chart's own form), the
/// values-file line just before the TOML's first line, so TOML line `n` is
/// values line `base + n`. `None` for other scalar styles, whose lines do not
/// map one to one.
fn literal_block_base(values: &str, scalar_line: usize, content: &str) -> Option<usize> {
    let lines: Vec<&str> = values.lines().collect();
    // The scalar's reported line is the indicator's or the first content line's.
    for start in [scalar_line.saturating_sub(1), scalar_line] {
        let header = lines.get(start.checked_sub(1)?)?;
        let indicator = header.trim_end().rsplit(':').next().unwrap_or("").trim();
        if !indicator.starts_with('|') {
            continue;
        }
        let first = content.lines().next().unwrap_or("").trim();
        if lines.get(start).is_some_and(|l| l.trim() == first) || first.is_empty() {
            return Some(start);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"concurrent = 4

[[runners]]
  name = "fenced"
  executor = "kubernetes"
  [runners.kubernetes]
    namespace = "gitlab-runner"
    [runners.kubernetes.node_selector]
      workload = "gitlab-runner"
    [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms]]
      [[runners.kubernetes.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.match_expressions]]
        key = "workload"
        operator = "In"
        values = ["gitlab-runner"]
"#;

    #[test]
    fn config_toml_settings_have_their_lines() {
        let c = ConfigFile::parse(CONFIG, "config.toml").expect("parses");
        assert_eq!(c.format, Format::ConfigToml);
        let k = c.runners[0]
            .kubernetes
            .as_ref()
            .expect("kubernetes")
            .get_ref();
        let ns = k.namespace.as_ref().expect("namespace");
        assert_eq!(c.locate(ns.span(), "ns").line, Some(7));
        let sel = k.node_selector.as_ref().expect("selector").get_ref();
        assert_eq!(c.locate(sel["workload"].span(), "w").line, Some(9));
        let terms = &k
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required")
            .get_ref()
            .node_selector_terms;
        let e = &terms[0].get_ref().match_expressions[0];
        assert_eq!(e.get_ref().values, ["gitlab-runner"]);
        // An array-of-tables entry starts at its [[...]] header.
        assert_eq!(c.locate(e.span(), "e").line, Some(11));
        assert_eq!(c.runner_location(0).line, Some(6));
    }

    #[test]
    fn chart_values_map_lines_into_the_values_file() {
        let values = "gitlabUrl: https://gitlab.example.com/\nrunners:\n  # comment\n  config: |\n    [[runners]]\n      [runners.kubernetes]\n        namespace = \"{{.Release.Namespace}}\"\n        image = \"alpine\"\n";
        let c = ConfigFile::parse(values, "values.yaml").expect("parses");
        assert_eq!(c.format, Format::HelmValues);
        let k = c.runners[0]
            .kubernetes
            .as_ref()
            .expect("kubernetes")
            .get_ref();
        let ns = k.namespace.as_ref().expect("namespace");
        assert_eq!(ns.get_ref(), "{{.Release.Namespace}}");
        let at = c.locate(ns.span(), "ns");
        assert_eq!((at.line, at.toml_line), (Some(7), 3));
    }

    #[test]
    fn a_quoted_runners_config_keeps_its_toml_lines() {
        let values = "runners:\n  config: \"[[runners]]\\n  [runners.kubernetes]\\n    namespace = 'x'\\n\"\n";
        let c = ConfigFile::parse(values, "values.yaml").expect("parses");
        let k = c.runners[0]
            .kubernetes
            .as_ref()
            .expect("kubernetes")
            .get_ref();
        let at = c.locate(k.namespace.as_ref().expect("namespace").span(), "ns");
        assert_eq!((at.line, at.toml_line), (None, 3));
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let e = ConfigFile::parse(
            "[[runners]]\n  [runners.kubernetes]\n    privileged = \"yes\"\n",
            "c.toml",
        )
        .expect_err("wrong type");
        assert!(matches!(&e, ConfigError::Toml { line: Some(3), .. }), "{e}");
        let e = ConfigFile::parse("runners:\n  image: alpine\n", "v.yaml").expect_err("no config");
        assert!(matches!(e, ConfigError::NoRunnersConfig { .. }), "{e}");
        let e = ConfigFile::parse("concurrent = 1\n", "c.toml").expect_err("no runners");
        assert!(matches!(e, ConfigError::NoRunners { .. }), "{e}");
        let e = ConfigFile::parse("runners:\n  config: |\n    [[runners]\n", "v.yaml")
            .expect_err("bad toml");
        assert!(
            matches!(&e, ConfigError::Toml { line: Some(3), message, .. } if message.starts_with("runners.config")),
            "{e}"
        );
        let c = ConfigFile::parse(
            "[runners.kubernetes]\nnamespace = \"gitlab-runner\"\n",
            "f.toml",
        )
        .expect("a fragment is one runner");
        assert_eq!(c.runners.len(), 1);
        let e = ConfigFile::parse("{ not: [valid", "x").expect_err("garbage");
        assert!(matches!(e, ConfigError::Unknown { .. }), "{e}");
    }
}
