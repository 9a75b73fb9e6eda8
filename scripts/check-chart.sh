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
common=(--namespace "$ns" --kube-version 1.33.0 --set referencePolicy=true)

echo "== values for the audit policy (runner-fence render helm-values)"
cargo run --quiet --locked -- render helm-values --policy manifests/overlays/audit/policy.yaml > "$out/audit.values.yaml"

# name | helm flags. Each option of the chart is set in at least one of them.
cases=(
  "generate|"
  "cert-manager|--set certificates.mode=certManager"
  "audit|-f $out/audit.values.yaml"
  "existing-secret|--set certificates.mode=existingSecret --set certificates.existingSecret.name=corp-tls --set-file certificates.existingSecret.caBundle=manifests/overlays/self-signed/certs/ca.crt"
  "cluster-issuer|--set certificates.mode=certManager --set certificates.certManager.issuerRef.name=corp --set certificates.certManager.issuerRef.kind=ClusterIssuer"
  "monitoring|--set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true"
  "scheduling|--set replicaCount=3 --set priorityClassName=system-node-critical --set tolerations[0].key=dedicated --set tolerations[0].operator=Exists --set nodeSelector.role=system --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  "no-backstop|--set backstop.enabled=false --set nodeCache.enabled=false --set webhooks.failurePolicy=Fail"
)
if [ ! -f manifests/overlays/self-signed/certs/ca.crt ]; then
  cargo run --quiet --locked -- certs generate --service runner-fence --namespace runner-fence --out manifests/overlays/self-signed/certs
fi

for c in "${cases[@]}"; do
  name=${c%%|*}; flags=${c#*|}
  # shellcheck disable=SC2086
  "$helm" lint --strict "${common[@]}" $flags "$chart" >/dev/null
  # shellcheck disable=SC2086
  "$helm" template runner-fence "$chart" "${common[@]}" $flags > "$out/chart-$name.yaml"
  echo "helm $name: lint clean, $(grep -c '^kind:' "$out/chart-$name.yaml") objects"
done

echo "== Kubernetes 1.33 schemas (strict; cert-manager and Prometheus Operator kinds are checked by the e2e apiserver)"
for f in "$out"/chart-*.yaml; do
  python3 - "$f" <<'PY' > "$f.core"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if not d["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
print(yaml.safe_dump_all(core))
PY
  kubernetes-validate --kubernetes-version 1.33.0 --strict --quiet "$f.core"
done

echo "== safety properties (same checks as the kustomize overlays)"
cp "$out/chart-generate.yaml" "$out/helm-self-signed.yaml"
cp "$out/chart-cert-manager.yaml" "$out/helm-cert-manager.yaml"
cp "$out/chart-audit.yaml" "$out/helm-audit.yaml"
if [ -z "${1:-}" ]; then
  python3 scripts/check_manifests.py "$out" .
fi
echo "chart checks passed (rendered files in $out)"
