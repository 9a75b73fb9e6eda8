#!/usr/bin/env bash
# The helmfile example (examples/helmfile), without a cluster or the internet: helmfile
# (built from its Go module, scripts/tools/helmfile.sh) renders the state and writes each
# release's values, running `runner-fence render ...` through the templates' exec as
# `helmfile apply` would. Then checks:
#   - releases, namespaces, the pinned gitlab-runner chart, and the ordering: gitlab-runner
#     needs runner-fence/runner-fence, which is installed with wait and waitForJobs;
#   - the runner's runners.config parses as TOML and its runners[0].kubernetes is exactly
#     `runner-fence render runner-config --policy examples/policy.yaml` plus the example's
#     own runnerKubernetes settings (no key of runner-fence's overridden);
#   - the runner manager's placement (affinity, tolerations) is the policy's default
#     profile, and `runner-fence eval` admits the manager pod without placement patches;
#   - the runner-fence values helmfile wrote are the policy file as the chart's initial
#     RunnerFencePolicy (its fields as the spec), `helm template` accepts them and the
#     rendered object passes `runner-fence lint`;
#   - the policy path is the environment value: another policy gives other values, and a
#     runnerKubernetes key runner-fence owns is refused.
# Nothing fetches charts.gitlab.io: `build` and `write-values` never prepare charts, and
# --skip-deps skips `helm repo add/update`.
set -euo pipefail
cd "$(dirname "$0")/.."

helm=$(bash scripts/tools/helm.sh | tail -1)
helmfile=$(bash scripts/tools/helmfile.sh | tail -1)
echo "== runner-fence (cargo build --locked)"
cargo build --locked --quiet
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$PWD/$target" ;; esac
helm_dir=$(dirname "$helm")
export PATH="$target/debug:$helm_dir:$PATH"
[ "$(command -v runner-fence)" = "$target/debug/runner-fence" ] || { echo "check-helmfile: runner-fence not found in $target/debug" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A helm configuration of its own: no repositories or cache of this machine matter.
export HELM_CONFIG_HOME="$out/helm/config" HELM_CACHE_HOME="$out/helm/cache" HELM_DATA_HOME="$out/helm/data"
export RUNNER_TOKEN=glrt-check-helmfile-dummy-token
export HELMFILE_UPGRADE_NOTICE_DISABLED=1   # no update check against github.com
state=examples/helmfile/helmfile.yaml
hf=("$helmfile" --file "$state" --skip-deps --quiet)

fail() { echo "check-helmfile: FAIL: $*" >&2; exit 1; }

echo "== helmfile $("$helmfile" version -o short), helm $("$helm" version --short)"
echo "== helmfile build --embed-values"
"${hf[@]}" build --embed-values > "$out/build.yaml" || fail "helmfile build failed (output above)"
echo "== helmfile write-values"
"${hf[@]}" write-values --output-file-template "$out/values/{{ .Release.Name }}.yaml" >/dev/null \
  || fail "helmfile write-values failed (output above)"
runner-fence render runner-config --policy examples/policy.yaml > "$out/runner-config.toml"

echo "== checks"
python3 - "$out" examples/policy.yaml <<'PY'
import os, sys, tomllib, yaml

out, policy_path = sys.argv[1], sys.argv[2]
def fail(msg):
    sys.exit(f"check-helmfile: FAIL: {msg}")
def load(path):
    with open(path) as f:
        return yaml.safe_load(f)

# helmfile build prints the state as YAML documents (one per part of helmfile.yaml).
with open(f"{out}/build.yaml") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
releases = {}
for d in docs:
    for r in d.get("releases") or []:
        releases[r["name"]] = r
if set(releases) != {"runner-fence", "gitlab-runner"}:
    fail(f"releases are {sorted(releases)}, expected gitlab-runner and runner-fence")
fence, runner = releases["runner-fence"], releases["gitlab-runner"]
if fence.get("namespace") != "runner-fence" or fence.get("chart") != "../../charts/runner-fence":
    fail(f"runner-fence release: namespace {fence.get('namespace')!r} chart {fence.get('chart')!r}")
if fence.get("wait") is not True or fence.get("waitForJobs") is not True:
    fail(f"runner-fence release must wait (wait: {fence.get('wait')!r}, waitForJobs: {fence.get('waitForJobs')!r}): "
         "otherwise the runner can start before the webhook is Ready")
if fence.get("atomic") is not True:
    fail("runner-fence release must be atomic: a release that never becomes Ready would leave "
         "failurePolicy Fail webhooks blocking every job")
if runner.get("chart") != "gitlab/gitlab-runner" or not runner.get("version"):
    fail(f"gitlab-runner release: chart {runner.get('chart')!r} version {runner.get('version')!r} (a pinned gitlab/gitlab-runner)")
if runner.get("needs") != ["runner-fence/runner-fence"]:
    fail(f"gitlab-runner needs {runner.get('needs')!r}, expected ['runner-fence/runner-fence']")
if fence.get("needs"):
    fail(f"runner-fence needs {fence['needs']!r}: it must come first")
repos = {r["name"]: r["url"] for d in docs for r in d.get("repositories") or []}
if repos.get("gitlab", "").rstrip("/") != "https://charts.gitlab.io":
    fail(f"repository gitlab is {repos.get('gitlab')!r}, expected https://charts.gitlab.io")
print(f"releases: runner-fence (wait, waitForJobs, atomic) <- gitlab-runner {runner['version']} (needs runner-fence/runner-fence)")

# build --embed-values rendered the values templates (exec included) into the state;
# write-values wrote the same values, merged, one file per release.
for name, r in releases.items():
    embedded = r.get("values") or []
    if len(embedded) != 1 or not isinstance(embedded[0], dict):
        fail(f"{name}: build --embed-values gave values {str(embedded)[:200]!r}, expected one rendered map")
    if embedded[0] != load(f"{out}/values/{name}.yaml"):
        fail(f"{name}: values embedded by helmfile build differ from those written by helmfile write-values")

# The runner-fence values helmfile wrote: the policy file as the initial RunnerFencePolicy's spec.
written = load(f"{out}/values/runner-fence.yaml")
plain = load(policy_path)
want = {k: v for k, v in plain.items() if k not in ("apiVersion", "kind", "metadata")}
initial = written.get("initialPolicy") or {}
if initial.get("enabled") is not True or initial.get("name") != plain["metadata"]["name"] or initial.get("spec") != want:
    fail(f"runner-fence values written by helmfile are not the policy file as initialPolicy: {str(written)[:300]}")
print("runner-fence values: initialPolicy is the policy file (its fields as the spec)")

# The runner's config.toml template.
values = load(f"{out}/values/gitlab-runner.yaml")
for key, want in [("gitlabUrl", "https://gitlab.example.com/"), ("runnerToken", os.environ["RUNNER_TOKEN"])]:
    if values.get(key) != want:
        fail(f"gitlab-runner {key} is {values.get(key)!r}, expected {want!r}")
if values.get("rbac", {}).get("create") is not True:
    fail("gitlab-runner rbac.create is not true")
try:
    config = tomllib.loads(values["runners"]["config"])
except (KeyError, tomllib.TOMLDecodeError) as e:
    fail(f"gitlab-runner runners.config is not TOML: {e}\n{values.get('runners', {}).get('config')}")
with open(f"{out}/runner-config.toml", "rb") as f:
    fragment = tomllib.load(f)["runners"]["kubernetes"]
if len(config.get("runners", [])) != 1:
    fail(f"runners.config has {len(config.get('runners', []))} [[runners]] entries, expected 1")
kubernetes = config["runners"][0].get("kubernetes", {})
own = {"image": "alpine:3.22"}          # runnerKubernetes in helmfile.yaml
if set(own) & set(fragment):
    fail(f"the example's own settings {sorted(set(own) & set(fragment))} collide with runner-fence's")
if kubernetes != {**fragment, **own}:
    missing = {k: v for k, v in fragment.items() if kubernetes.get(k) != v}
    extra = {k: v for k, v in kubernetes.items() if k not in fragment and k not in own}
    fail(f"runners[0].kubernetes is not render runner-config + {own}: differs on {sorted(missing)}, extra {sorted(extra)}")
if kubernetes["namespace"] != runner["namespace"]:
    fail(f"job namespace {kubernetes['namespace']!r} is not the runner release's {runner['namespace']!r}")
print(f"runners.config: TOML; runners[0].kubernetes = render runner-config ({len(fragment)} keys) + {sorted(own)}")

# The manager pod: the policy's default profile.
policy = load(policy_path)
profile = policy["placement"]["profiles"][policy["placement"]["default"]]
terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
if terms != [{"matchExpressions": profile["requiredNodeLabels"]}]:
    fail(f"manager affinity {terms} is not the default profile's requiredNodeLabels {profile['requiredNodeLabels']}")
if values["tolerations"] != profile.get("tolerations", []):
    fail(f"manager tolerations {values['tolerations']} are not the default profile's {profile.get('tolerations')}")
if terms != [{"matchExpressions": [{"key": "workload", "operator": "In", "values": ["gitlab-runner"]}]}] or \
   values["tolerations"] != [{"key": "workload", "operator": "Equal", "value": "gitlab-runner", "effect": "NoSchedule"}]:
    fail("manager placement is not workload=gitlab-runner / workload=gitlab-runner:NoSchedule for examples/policy.yaml")
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "gitlab-runner-", "namespace": runner["namespace"],
                    "labels": {"app": "gitlab-runner", "release": "gitlab-runner"}},
       "spec": {"affinity": values["affinity"], "tolerations": values["tolerations"],
                "containers": [{"name": "gitlab-runner", "image": "registry.gitlab.com/gitlab-org/gitlab-runner:alpine-v18.10.1",
                                "resources": values["resources"]}]}}
with open(f"{out}/manager-pod.yaml", "w") as f:
    yaml.safe_dump(pod, f)
print("manager placement: the default profile (workload=gitlab-runner, toleration workload=gitlab-runner:NoSchedule)")
PY

echo "== runner-fence eval: the manager pod as the chart places it"
runner-fence eval --policy examples/policy.yaml --output json "$out/manager-pod.yaml" > "$out/eval.json" || true
python3 - "$out/eval.json" <<'PY' || fail "the runner manager pod is not admitted as placed (see above)"
import base64, json, sys
r = json.load(open(sys.argv[1]))
if isinstance(r, list):
    r = r[0]
validate = r.get("validate", {}).get("response", {})
print(f"  matched {r.get('matched')}, allowed {validate.get('allowed')}, profile {r.get('profile', validate.get('auditAnnotations', {}).get('profile'))}")
assert r.get("matched") is True, "not matched: the manager's namespace is not fenced"
assert validate.get("allowed") is True, validate.get("status")
patch = r.get("mutate", {}).get("response", {}).get("patch")
paths = [op["path"] for op in json.loads(base64.b64decode(patch))] if patch else []
print(f"  mutating patch paths: {paths}")
placement = [p for p in paths if p.startswith(("/spec/affinity", "/spec/tolerations", "/spec/nodeSelector", "/metadata/labels"))]
assert not placement, f"the webhook had to patch the manager's placement: {placement}"
PY

echo "== helm template charts/runner-fence with the values helmfile wrote"
"$helm" template runner-fence charts/runner-fence -n runner-fence --kube-version 1.33.0 \
  -f "$out/values/runner-fence.yaml" > "$out/chart.yaml" || fail "helm template refused the values helmfile wrote"
grep -q '^kind: RunnerFencePolicy' "$out/chart.yaml" || fail "no initial RunnerFencePolicy rendered"
python3 - "$out/chart.yaml" "$target/debug/runner-fence" <<'PY' || fail "the chart's RunnerFencePolicy does not load with runner-fence lint"
import subprocess, sys, tempfile, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "RunnerFencePolicy"]
with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    yaml.safe_dump(docs[0], f)
    f.flush()
    subprocess.run([sys.argv[2], "lint", f.name], check=True)
PY
echo "helm template: $(grep -c '^kind:' "$out/chart.yaml") objects"

echo "== the policy is the environment value 'policy'"
"${hf[@]}" --state-values-set policy=../../examples/policy-audit.yaml \
  write-values --output-file-template "$out/audit/{{ .Release.Name }}.yaml" >/dev/null \
  || fail "helmfile write-values with --state-values-set policy=... failed"
python3 - "$out" <<'PY' || fail "--state-values-set policy=examples/policy-audit.yaml did not change the values"
import sys, yaml
out = sys.argv[1]
a = yaml.safe_load(open(f"{out}/audit/runner-fence.yaml"))["initialPolicy"]["spec"]
reference = yaml.safe_load(open(f"{out}/values/runner-fence.yaml"))["initialPolicy"]["spec"]
assert a["mode"] == "audit" and reference["mode"] == "enforce"
assert {k: v for k, v in a.items() if k != "mode"} == {k: v for k, v in reference.items() if k != "mode"}
print(f"  examples/policy-audit.yaml: initialPolicy mode {a['mode']}")
PY

echo "== a runnerKubernetes key runner-fence owns is refused"
if "${hf[@]}" --state-values-set runnerKubernetes.namespace=elsewhere \
     write-values --output-file-template "$out/bad/{{ .Release.Name }}.yaml" > "$out/bad.log" 2>&1; then
  fail "runnerKubernetes.namespace was accepted"
fi
grep -q 'runnerKubernetes.namespace is set by runner-fence' "$out/bad.log" || { cat "$out/bad.log" >&2; fail "refused, but not with the expected message"; }
echo "  refused: runnerKubernetes.namespace is set by runner-fence from the policy"

echo "helmfile example checks passed"
