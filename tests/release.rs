//! Release consistency (#22): one version in the crate, the chart and every published image
//! reference; a changelog section and a licence for it; a crate that builds from its packaged
//! form; the two image recipes (scripts/release/oci_image.py and the Dockerfile) agreeing.
//! The image itself is built, run and pushed by `scripts/release/check-image.sh` in CI.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE: &str = "registry.gitlab.com/runner-fence/runner-fence";
const CHART: &str = "oci://registry.gitlab.com/runner-fence/runner-fence/charts/runner-fence";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every text file of the repository outside build output and VCS metadata.
fn repo_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | ".git" | "certs" | "corpus" | "artifacts"
                ) {
                    stack.push(p);
                }
            } else if std::fs::read_to_string(&p).is_ok() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The tag after each `REF` in `text` (up to the first character that cannot be in a tag),
/// except where a template or shell variable follows (`{version}`, `$VERSION`).
fn tags_after<'a>(text: &'a str, reference: &str) -> Vec<&'a str> {
    text.match_indices(reference)
        .filter_map(|(i, _)| {
            let rest = &text[i + reference.len()..];
            if rest.starts_with(['{', '$']) {
                return None;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .unwrap_or(rest.len());
            Some(&rest[..end])
        })
        .collect()
}

#[test]
fn chart_version_and_app_version_are_the_crate_version() {
    let chart = yaml("charts/runner-fence/Chart.yaml");
    assert_eq!(chart["version"], VERSION, "Chart.yaml version");
    assert_eq!(chart["appVersion"], VERSION, "Chart.yaml appVersion");
    let values = yaml("charts/runner-fence/values.yaml");
    assert_eq!(values["image"]["repository"], IMAGE);
    // An empty tag means the chart's appVersion (templates/_helpers.tpl).
    assert_eq!(
        values["image"]["tag"], "",
        "values.yaml image.tag must follow appVersion"
    );
    assert!(read("charts/runner-fence/templates/_helpers.tpl").contains(".Chart.AppVersion"));
}

#[test]
fn every_published_image_reference_has_this_version() {
    let mut seen = BTreeSet::new();
    // The names before this release (spelt in two parts so that this file does not match).
    let stale = [
        ["ghcr.io", "/runner-fence"].concat(),
        ["runner-fence/runner-fence", ":0.1.0"].concat(),
    ];
    for path in repo_files() {
        let text = std::fs::read_to_string(&path).expect("text");
        let rel = path
            .strip_prefix(root())
            .expect("inside")
            .display()
            .to_string();
        for s in &stale {
            assert!(!text.contains(s.as_str()), "{rel} still names {s}");
        }
        for tag in tags_after(&text, &format!("{IMAGE}:")) {
            assert_eq!(tag, VERSION, "{rel}: {IMAGE}:{tag}");
            seen.insert(rel.clone());
        }
        for tag in tags_after(&text, &format!("{CHART} --version ")) {
            assert_eq!(tag, VERSION, "{rel}: {CHART} --version {tag}");
            seen.insert(rel.clone());
        }
    }
    // The places users copy the image name from.
    for must in [
        "README.md",
        "manifests/base/deployment.yaml",
        "ci/gitlab/runner-fence.gitlab-ci.yml",
    ] {
        assert!(
            seen.contains(must),
            "{must} names no {IMAGE}:{VERSION}: {seen:?}"
        );
    }
}

#[test]
fn the_changelog_has_a_dated_section_for_this_version() {
    let log = read("CHANGELOG.md");
    assert!(
        log.contains("[Keep a Changelog]"),
        "not a Keep a Changelog file"
    );
    assert!(log.contains("\n## [Unreleased]\n"));
    let heading = format!("\n## [{VERSION}] - ");
    let at = log
        .find(&heading)
        .unwrap_or_else(|| panic!("CHANGELOG.md has no '## [{VERSION}] - DATE' section"));
    let date = &log[at + heading.len()..][..10];
    let b = date.as_bytes();
    assert!(
        date.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && date.replace('-', "").bytes().all(|c| c.is_ascii_digit()),
        "the {VERSION} section's date {date:?} is not YYYY-MM-DD"
    );
    assert!(
        log.contains(&format!("\n[{VERSION}]: ")),
        "no link for [{VERSION}]"
    );
    for line in log.lines().filter(|l| l.starts_with("### ")) {
        assert!(
            [
                "Added",
                "Changed",
                "Deprecated",
                "Removed",
                "Fixed",
                "Security"
            ]
            .contains(&&line[4..]),
            "CHANGELOG.md: {line:?} is not a Keep a Changelog section"
        );
    }
}

#[test]
fn the_licence_is_the_one_cargo_toml_declares() {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    assert_eq!(manifest["package"]["license"].as_str(), Some("Apache-2.0"));
    let license = read("LICENSE");
    assert!(license.trim_start().starts_with("Apache License"));
    assert!(license.contains("Version 2.0, January 2004"));
    assert!(license.contains("END OF TERMS AND CONDITIONS"));
    assert!(
        read("scripts/release/build-image.sh")
            .contains("org.opencontainers.image.licenses=Apache-2.0")
    );
}

/// `include_str!`/`include_bytes!` paths in the sources, resolved against the including file.
fn embedded_files(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            embedded_files(&p, out);
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("source");
        for mac in ["include_str!(\"", "include_bytes!(\""] {
            for (i, _) in text.match_indices(mac) {
                let rest = &text[i + mac.len()..];
                let rel = &rest[..rest.find('"').expect("closing quote")];
                let full = p.parent().expect("parent").join(rel);
                let canon = full
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("{}: {rel}: {e}", p.display()));
                out.insert(canon);
            }
        }
    }
}

#[test]
fn the_package_holds_every_file_the_crate_embeds() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["package", "--list", "--locked", "--allow-dirty"])
        .current_dir(root())
        .output()
        .expect("cargo package --list");
    assert!(
        out.status.success(),
        "cargo package --list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: BTreeSet<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut embedded = BTreeSet::new();
    embedded_files(&root().join("src"), &mut embedded);
    assert!(
        !embedded.is_empty(),
        "no include_str! found: the scan is broken"
    );
    let base = root().canonicalize().expect("root");
    for f in &embedded {
        let rel = f
            .strip_prefix(&base)
            .unwrap_or_else(|_| panic!("{} is outside the crate", f.display()));
        let rel = rel.to_string_lossy().replace('\\', "/");
        assert!(
            listed.contains(&rel),
            "the package lacks {rel}, which src/ embeds"
        );
    }
    for must in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "src/main.rs",
        "src/lib.rs",
    ] {
        assert!(
            listed.contains(must),
            "the package lacks {must}: {listed:?}"
        );
    }
    for f in &listed {
        assert!(
            ![
                "tests/",
                "charts/",
                "fuzz/",
                "manifests/",
                "scripts/",
                "target/"
            ]
            .iter()
            .any(|d| f.starts_with(d)),
            "the package carries {f}, which the crate does not need"
        );
    }
}

#[test]
fn the_dockerfile_builds_what_the_release_script_builds() {
    let docker = read("Dockerfile");
    let oci = read("scripts/release/oci_image.py");
    assert!(
        oci.contains("USER = 65532\n")
            && oci.contains("ENTRYPOINT = \"/usr/local/bin/runner-fence\"\n")
    );
    assert!(
        docker.contains("USER 65532:65532"),
        "Dockerfile: not the image's user 65532"
    );
    // The binary alone as the entrypoint, `serve` as the default command: every
    // container the chart runs names its verb first (tests/chart.rs checks they parse).
    assert!(
        docker.contains("ENTRYPOINT [\"/usr/local/bin/runner-fence\"]\nCMD [\"serve\"]"),
        "Dockerfile: not the image's entrypoint and command"
    );
    assert!(
        oci.contains("\"Entrypoint\": [ENTRYPOINT],") && oci.contains("\"Cmd\": [\"serve\"],"),
        "oci_image.py: not the entrypoint and command"
    );
    assert!(
        docker.contains("FROM scratch"),
        "Dockerfile: the image has no base"
    );
    assert!(docker.contains("target-feature=+crt-static") && docker.contains("--profile dist"));
    assert!(read("scripts/release/build-image.sh").contains("target-feature=+crt-static"));
}

#[test]
fn the_webhook_is_not_pinned_to_one_architecture() {
    // Both linux/amd64 and linux/arm64 are built (.gitlab-ci.yml, build job).
    let values = yaml("charts/runner-fence/values.yaml");
    assert!(
        values["nodeSelector"].get("kubernetes.io/arch").is_none(),
        "values.yaml still pins an architecture"
    );
    let base = read("manifests/base/deployment.yaml");
    assert!(
        !base.contains("kubernetes.io/arch"),
        "the kustomize base still pins an architecture"
    );
    let ci = read(".gitlab-ci.yml");
    assert!(ci.contains("PLATFORMS: linux/amd64 linux/arm64"));
}
