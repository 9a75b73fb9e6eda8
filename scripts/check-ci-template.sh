#!/usr/bin/env bash
# Checks the GitLab CI template for policy projects, ci/gitlab/runner-fence.gitlab-ci.yml:
# 1. every YAML document of it (the `spec:inputs` header and the jobs), and the jobs as
#    GitLab includes them (inputs interpolated), against GitLab's CI JSON schema
#    (check-jsonschema's vendored copy, used offline);
# 2. the job's before_script and script, run as GitLab Runner runs them (bash, and POSIX
#    sh like the default image's busybox) with this checkout's runner-fence, on the
#    example policy and tests and on broken copies of them, and on policy objects in a
#    repository layout (tests/data/policy-repo, tests/data/policy-conflict): exit codes,
#    output, and the JUnit reports against tests/schemas/gitlab-junit.xsd (the JUnit GitLab reads).
# Installs what it needs (check-jsonschema, xmlschema, PyYAML from PyPI); builds the
# debug runner-fence with `cargo run`, as the rest of CI does. No network beyond pip.
set -euo pipefail
cd "$(dirname "$0")/.."

template=ci/gitlab/runner-fence.gitlab-ci.yml
xsd=tests/schemas/gitlab-junit.xsd

pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v -i "running pip as the 'root' user" || true; }
pip_install check-jsonschema xmlschema pyyaml
command -v check-jsonschema >/dev/null || { echo "FAIL: check-jsonschema is missing after pip install" >&2; exit 1; }
python3 -c 'import xmlschema, yaml' || { echo "FAIL: xmlschema or PyYAML is missing after pip install" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== GitLab CI schema (check-jsonschema $(check-jsonschema --version | awk '{print $NF}'), vendor.gitlab-ci)"
# check-jsonschema reads one YAML document per file: the header and the jobs separately.
mapfile -t docs < <(python3 scripts/check_ci_template.py split "$template" "$work/docs")
[ "${#docs[@]}" -eq 2 ] || { echo "FAIL: expected 2 YAML documents in $template, got ${#docs[@]}" >&2; exit 1; }
# As included: with the defaults, and with every input given.
python3 scripts/check_ci_template.py render "$template" "$work/docs/rendered-defaults.json"
python3 scripts/check_ci_template.py render "$template" "$work/docs/rendered-inputs.json" \
  policy="platform/policies platform/policy.yaml" tests=platform/tests junit=reports/runner-fence.xml stage=verify \
  job-name=runner-fence-platform image=registry.example.com/tools/runner-fence-shell:1 \
  runner-fence-image=registry.example.com/platform/runner-fence:0.1.0 strict-lint=true
if ! check-jsonschema --builtin-schema vendor.gitlab-ci "${docs[@]}" \
     "$work/docs/rendered-defaults.json" "$work/docs/rendered-inputs.json"; then
  echo "FAIL: $template does not validate against GitLab's CI schema" >&2
  exit 1
fi

echo "== $xsd against reference documents"
python3 scripts/check_ci_template.py xsd-selftest "$xsd"

echo "== runner-fence (cargo run)"
cargo run --quiet --locked -- --version
target_dir=$(cargo metadata --quiet --locked --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/debug/runner-fence"
[ -x "$binary" ] || { echo "FAIL: no runner-fence binary at $binary after cargo run" >&2; exit 1; }

echo "== the job's scripts, and the JUnit reports against $xsd"
python3 scripts/check_ci_template.py jobs "$template" "$binary" "$xsd" "$work/jobs"
echo "CI template checks passed"
