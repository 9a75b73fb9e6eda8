#!/usr/bin/env bash
# The end-to-end suite on a real control plane, in one command:
#   bash scripts/e2e.sh
# Builds kube-apiserver, kube-scheduler and kube-controller-manager from the
# k8s.io/kubernetes Go module on first use (about 22 minutes on 2 cores; cached in
# ~/.cache/runner-fence afterwards), starts them with etcd on 127.0.0.1, creates the
# fake Nodes, runs tests/e2e.rs and tests/e2e_audit.rs and stops everything again. Fails, never skips,
# when the control plane cannot be built or started.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${RUNNER_FENCE_E2E_DIR:-$(mktemp -d /tmp/runner-fence-e2e.XXXXXX)}
cleanup() { bash scripts/cluster/down.sh "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== control plane (binaries: $(bash scripts/cluster/build.sh | tail -1))"
bash scripts/cluster/up.sh "$dir"
export KUBECONFIG="$dir/kubeconfig"
bash scripts/cluster/nodes.sh
kubectl get nodes -o wide

echo "== loopback registry with the image and the chart (the e2e installs the chart from it)"
if ! refs=$(bash scripts/release/local-registry.sh env 2>/dev/null) || ! grep -q '^RUNNER_FENCE_CHART=' <<<"$refs"; then
  # Not left running by .ci/run's image check: build, push and keep it for this run.
  KEEP_REGISTRY=1 bash scripts/release/check-image.sh
  trap 'cleanup; bash scripts/release/local-registry.sh down >/dev/null 2>&1 || true' EXIT
  refs=$(bash scripts/release/local-registry.sh env)
fi
while IFS='=' read -r key value; do
  case "$key" in RUNNER_FENCE_*) export "$key=$value" ;; esac
done <<<"$refs"
echo "chart: $RUNNER_FENCE_CHART $RUNNER_FENCE_CHART_VERSION, image: $RUNNER_FENCE_IMAGE"

echo "== e2e suite"
RUNNER_FENCE_E2E_KUBECONFIG="$KUBECONFIG" cargo test --locked --test e2e --test e2e_audit -- --ignored --nocapture "$@"
