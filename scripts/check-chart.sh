#!/usr/bin/env bash
# The Helm chart, without a cluster: helm lint (strict) and helm template with the
# default values and with each option set, the rendered objects validated against
# Kubernetes 1.33 schemas, and the same safety checks as the kustomize overlays
# (scripts/check_manifests.py). Helm is built from its Go module (scripts/tools/helm.sh).
# Usage: check-chart.sh [OUT_DIR]. With OUT_DIR (check-deploy.sh) the safety checks run
# there together with the overlays; without, here on the chart alone.
set -euo pipefail
cd "$(dirname "$0")/.."

helm=$(bash scripts/tools/helm.sh | tail -1)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
chart=charts/runner-fence
ns=runner-fence
common=(--namespace "$ns" --kube-version 1.33.0)

echo "== values with an initial policy (the reference policy's spec)"
python3 - "$out/initial.values.yaml" <<'PY'
import json, sys, yaml
spec = yaml.safe_load(open("examples/runnerfencepolicy.yaml"))["spec"]
json.dump({"initialPolicy": {"enabled": True, "name": "gitlab-runner-jobs", "spec": spec}}, open(sys.argv[1], "w"))
PY

# name | helm flags. Each option of the chart is set in at least one of them.
cases=(
  "managed|"
  "cert-manager|--set certificates.mode=certManager"
  "initial-policy|-f $out/initial.values.yaml"
  "existing-secret|--set certificates.mode=existingSecret --set certificates.existingSecret.name=corp-tls"
  "cluster-issuer|--set certificates.mode=certManager --set certificates.certManager.issuerRef.name=corp --set certificates.certManager.issuerRef.kind=ClusterIssuer"
  "monitoring|--set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true"
  "scheduling|--set replicaCount=3 --set priorityClassName=system-node-critical --set tolerations[0].key=dedicated --set tolerations[0].operator=Exists --set nodeSelector.role=system --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  "fail-open|--set nodeCache.enabled=false --set webhooks.failurePolicy=Ignore"
)

for c in "${cases[@]}"; do
  name=${c%%|*}; flags=${c#*|}
  # shellcheck disable=SC2086
  "$helm" lint --strict "${common[@]}" $flags "$chart" >/dev/null
  # shellcheck disable=SC2086
  "$helm" template runner-fence "$chart" "${common[@]}" $flags > "$out/chart-$name.yaml"
  echo "helm $name: lint clean, $(grep -c '^kind:' "$out/chart-$name.yaml") objects"
done

echo "== Kubernetes 1.33 schemas (strict; cert-manager, Prometheus Operator and RunnerFencePolicy objects are checked by the e2e apiserver)"
for f in "$out"/chart-*.yaml; do
  python3 - "$f" <<'PY' > "$f.core"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if not d["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/", "runner-fence.dev/"))]
print(yaml.safe_dump_all(core))
PY
  kubernetes-validate --kubernetes-version 1.33.0 --strict --quiet "$f.core"
done

echo "== safety properties (same checks as the kustomize overlays)"
# The option sets a deployment uses as they are (scheduling overrides, e.g. tolerations, are
# the operator's call and not held to the overlays' rules).
for name in managed cert-manager initial-policy; do
  cp "$out/chart-$name.yaml" "$out/helm-$name.yaml"
done
if [ -z "${1:-}" ]; then
  python3 scripts/check_manifests.py "$out" .
fi
echo "chart checks passed (rendered files in $out)"
