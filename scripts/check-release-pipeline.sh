#!/usr/bin/env bash
# Checks the release pipeline of this repository, .gitlab-ci.yml: against GitLab's CI JSON
# schema (check-jsonschema's vendored copy, offline, as scripts/check-ci-template.sh does for
# the policy template), then its structure (scripts/check_release_pipeline.py: the build job
# runs the script CI runs here, keyless signing, SBOM attestations, notes from CHANGELOG.md,
# variables, needs, script paths, README's verification identity), and the release notes of
# the current version. Installs check-jsonschema and PyYAML from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v -i "running pip as the 'root' user" || true; }
pip_install check-jsonschema pyyaml
command -v check-jsonschema >/dev/null || { echo "FAIL: check-jsonschema is missing after pip install" >&2; exit 1; }

echo "== .gitlab-ci.yml against GitLab's CI schema (check-jsonschema $(check-jsonschema --version | awk '{print $NF}'), vendor.gitlab-ci)"
check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml \
  || { echo "FAIL: .gitlab-ci.yml does not validate against GitLab's CI schema" >&2; exit 1; }
echo "== release pipeline structure"
python3 scripts/check_release_pipeline.py .gitlab-ci.yml
echo "== release notes of this version (scripts/release/notes.sh)"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
notes=$(sh scripts/release/notes.sh "$version")
echo "$version: $(printf '%s\n' "$notes" | grep -c '^- ') entries"
