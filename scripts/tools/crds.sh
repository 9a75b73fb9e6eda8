#!/usr/bin/env bash
# Puts plain, apply-able CustomResourceDefinitions for the objects that the chart's and
# the manifests' optional integrations create into a cache outside the checkout:
#
#   cert-manager         certificates, issuers, clusterissuers (cert-manager.io)
#   prometheus-operator  servicemonitors, prometheusrules (monitoring.coreos.com)
#
# Both come from their projects' Go modules (the only way to their sources here):
#   - cert-manager: the Helm chart in deploy/charts/cert-manager, whose CRD templates are
#     wrapped in `{{- if or .Values.crds.enabled .Values.installCRDs }}` and carry
#     templated labels, is packaged with the module version and rendered with
#     `helm template` exactly as cert-manager's release builds cert-manager.crds.yaml
#     (make/manifests.mk: --set crds.enabled=true --set creator=static ...). Its
#     deploy/crds/ holds controller-gen sources that its README says not to install.
#   - prometheus-operator: example/prometheus-operator-crd/ of the main module, plain
#     controller-gen output (the pkg/apis/monitoring submodule ships no YAML).
#
# Layout (RUNNER_FENCE_CACHE moves the root, default ~/.cache/runner-fence):
#   crds/cert-manager-VERSION/<plural>.<group>.yaml
#   crds/prometheus-operator-VERSION/<plural>.<group>.yaml
#   crds/all-cert-manager-VERSION-prometheus-operator-VERSION/   (all five files)
# Each file holds exactly one apiextensions.k8s.io/v1 CustomResourceDefinition and is
# checked (PyYAML) before the directory is put in place; a directory that exists is
# complete, so a second run only prints the paths.
#
# Prints the two per-project directories, then the directory holding all the files on
# the last line of stdout. Progress goes to stderr. Use with e.g.
#   kubectl apply --server-side -f "$(bash scripts/tools/crds.sh | tail -n1)"
set -euo pipefail

# Exact module versions (the newest each one the Go module proxy serves here).
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.21.2}
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}
CERT_MANAGER_MODULE=github.com/cert-manager/cert-manager
PROMETHEUS_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator

# name=Kind/Scope/served-version-that-must-exist
CERT_MANAGER_CRDS=(
  "certificates.cert-manager.io=Certificate/Namespaced/v1"
  "issuers.cert-manager.io=Issuer/Namespaced/v1"
  "clusterissuers.cert-manager.io=ClusterIssuer/Cluster/v1"
)
PROMETHEUS_OPERATOR_CRDS=(
  "servicemonitors.monitoring.coreos.com=ServiceMonitor/Namespaced/v1"
  "prometheusrules.monitoring.coreos.com=PrometheusRule/Namespaced/v1"
)

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
root="$CACHE/crds"
cm_dir="$root/cert-manager-$CERT_MANAGER_VERSION"
po_dir="$root/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
all_dir="$root/all-cert-manager-$CERT_MANAGER_VERSION-prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"

log() { echo "crds.sh: $*" >&2; }
die() { echo "crds.sh: $*" >&2; exit 1; }

# complete DIR SPEC...: every expected file is there and not empty.
complete() {
  local dir=$1 spec
  shift
  [ -d "$dir" ] || return 1
  for spec in "$@"; do
    [ -s "$dir/${spec%%=*}.yaml" ] || return 1
  done
}

if complete "$all_dir" "${CERT_MANAGER_CRDS[@]}" "${PROMETHEUS_OPERATOR_CRDS[@]}" \
  && complete "$cm_dir" "${CERT_MANAGER_CRDS[@]}" \
  && complete "$po_dir" "${PROMETHEUS_OPERATOR_CRDS[@]}"; then
  printf '%s\n' "$cm_dir" "$po_dir" "$all_dir"
  exit 0
fi

command -v go >/dev/null || die "go is required to fetch the CRDs from the Go module proxy"
if ! python3 -c 'import yaml' 2>/dev/null; then
  log "installing PyYAML (PyPI) to check the CRDs"
  python3 -m pip install --quiet --disable-pip-version-check pyyaml >&2
  python3 -c 'import yaml' || die "PyYAML is missing after pip install"
fi

mkdir -p "$root"
work=$(mktemp -d "$root/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# module_dir MODULE VERSION: the module's files (read-only) from `go mod download`.
module_dir() {
  local json
  log "go mod download $1@$2"
  json=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$1@$2") || {
    echo "$json" >&2
    die "go mod download $1@$2 failed"
  }
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Dir"])' <<<"$json"
}

# check FILE SPEC...: each FILE (in order) holds exactly one valid v1 CRD matching SPEC.
check() {
  python3 - "$@" <<'PY'
import re, sys, yaml

args = sys.argv[1:]
n = len(args) // 2
errors = []
for path, spec in zip(args[:n], args[n:]):
    name, rest = spec.split("=", 1)
    kind, scope, version = rest.split("/")
    def err(msg):
        errors.append(f"{path}: {msg}")
    text = open(path, encoding="utf-8").read()
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*\{\{", line):
            err(f"line {i} is a template directive: {line.strip()}")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        err(f"not YAML: {e}")
        continue
    if len(docs) != 1:
        err(f"{len(docs)} documents, expected 1")
        continue
    crd = docs[0]
    if not isinstance(crd, dict):
        err("not a mapping")
        continue
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        err(f"is {crd.get('apiVersion')} {crd.get('kind')}, not apiextensions.k8s.io/v1 CustomResourceDefinition")
        continue
    meta = crd.get("metadata") or {}
    specd = crd.get("spec") or {}
    names = specd.get("names") or {}
    if meta.get("name") != name:
        err(f"metadata.name is {meta.get('name')!r}, expected {name!r}")
    if f"{names.get('plural')}.{specd.get('group')}" != name:
        err(f"spec.names.plural + '.' + spec.group is not {name!r}")
    if names.get("kind") != kind:
        err(f"spec.names.kind is {names.get('kind')!r}, expected {kind!r}")
    if specd.get("scope") != scope:
        err(f"spec.scope is {specd.get('scope')!r}, expected {scope!r}")
    for field in ("labels", "annotations"):
        m = meta.get(field) or {}
        if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
            err(f"metadata.{field} is not a map of strings")
        elif any("{{" in v or "{{" in k for k, v in m.items()):
            err(f"metadata.{field} holds a template expression")
    versions = specd.get("versions") or []
    if not versions:
        err("no spec.versions")
    if sum(1 for v in versions if v.get("storage") is True) != 1:
        err("not exactly one storage version")
    served = [v.get("name") for v in versions if v.get("served") is True]
    if version not in served:
        err(f"version {version} is not served (served: {served})")
    for v in versions:
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {}
        if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) \
                or "spec" not in schema["properties"]:
            err(f"version {v.get('name')} has no openAPIV3Schema of type object with a spec property")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
PY
}

# install_dir DIR STAGED: move a checked, staged directory into place (atomically; a
# concurrent run that got there first wins, its copy is equally good).
install_dir() {
  rm -rf "$1"
  mv -T "$2" "$1" 2>/dev/null || [ -d "$1" ] || die "cannot create $1"
}

header() { # header NAME MODULE VERSION HOW
  echo "# $1 from $2@$3 ($4); written by scripts/tools/crds.sh"
}

# --- cert-manager: render the CRD templates of its Helm chart -------------------------
if ! complete "$cm_dir" "${CERT_MANAGER_CRDS[@]}"; then
  src=$(module_dir "$CERT_MANAGER_MODULE" "$CERT_MANAGER_VERSION")
  chart_src="$src/deploy/charts/cert-manager"
  [ -f "$chart_src/Chart.yaml" ] || die "no Helm chart at $chart_src"
  helm=$(bash "$here/helm.sh" | tail -n1)
  [ -x "$helm" ] || die "scripts/tools/helm.sh printed no helm binary"
  # Helm's own state stays in the scratch directory.
  export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"
  cp -r "$chart_src" "$work/chart"
  chmod -R u+w "$work/chart"
  # As the release does: version and appVersion (v0.0.0 in the source) set by packaging.
  "$helm" package --version "$CERT_MANAGER_VERSION" --app-version "$CERT_MANAGER_VERSION" \
    --destination "$work" "$work/chart" >&2
  tgz="$work/cert-manager-$CERT_MANAGER_VERSION.tgz"
  [ -f "$tgz" ] || die "helm package made no $tgz"
  stage="$work/cert-manager"
  mkdir -p "$stage"
  files=()
  for spec in "${CERT_MANAGER_CRDS[@]}"; do
    name=${spec%%=*}
    plural=${name%%.*} group=${name#*.}
    template="templates/crd-${group}_${plural}.yaml"
    [ -f "$work/chart/$template" ] || die "chart has no $template"
    log "helm template $template"
    {
      header "$name" "$CERT_MANAGER_MODULE" "$CERT_MANAGER_VERSION" \
        "deploy/charts/cert-manager/$template rendered by helm template with crds.enabled=true, creator=static"
      # Same flags as cert-manager's make/manifests.mk for cert-manager.crds.yaml; the
      # sed drops the leading '---' that helm adds.
      "$helm" template cert-manager "$tgz" --namespace cert-manager --kube-version 1.29.0 \
        --set crds.enabled=true --set creator=static --set startupapicheck.enabled=false \
        --show-only "$template" | sed -e '1{/^---$/d;}'
    } >"$stage/$name.yaml"
    files+=("$stage/$name.yaml")
  done
  check "${files[@]}" "${CERT_MANAGER_CRDS[@]}" || die "cert-manager CRDs failed the check"
  install_dir "$cm_dir" "$stage"
  log "wrote $cm_dir"
fi

# --- prometheus-operator: plain YAML from the main module -----------------------------
if ! complete "$po_dir" "${PROMETHEUS_OPERATOR_CRDS[@]}"; then
  src=$(module_dir "$PROMETHEUS_OPERATOR_MODULE" "$PROMETHEUS_OPERATOR_VERSION")
  crd_src="$src/example/prometheus-operator-crd"
  stage="$work/prometheus-operator"
  mkdir -p "$stage"
  files=()
  for spec in "${PROMETHEUS_OPERATOR_CRDS[@]}"; do
    name=${spec%%=*}
    plural=${name%%.*} group=${name#*.}
    file="$crd_src/${group}_${plural}.yaml"
    [ -f "$file" ] || die "module has no $file"
    {
      header "$name" "$PROMETHEUS_OPERATOR_MODULE" "$PROMETHEUS_OPERATOR_VERSION" \
        "example/prometheus-operator-crd/${group}_${plural}.yaml, unchanged"
      cat "$file"
    } >"$stage/$name.yaml"
    files+=("$stage/$name.yaml")
  done
  check "${files[@]}" "${PROMETHEUS_OPERATOR_CRDS[@]}" || die "prometheus-operator CRDs failed the check"
  install_dir "$po_dir" "$stage"
  log "wrote $po_dir"
fi

# --- one directory with all of them ----------------------------------------------------
stage="$work/all"
mkdir -p "$stage"
cp "$cm_dir"/*.yaml "$po_dir"/*.yaml "$stage/"
install_dir "$all_dir" "$stage"
complete "$all_dir" "${CERT_MANAGER_CRDS[@]}" "${PROMETHEUS_OPERATOR_CRDS[@]}" || die "$all_dir is incomplete"
log "wrote $all_dir"

printf '%s\n' "$cm_dir" "$po_dir" "$all_dir"
