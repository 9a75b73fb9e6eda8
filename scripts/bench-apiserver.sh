#!/usr/bin/env bash
# Pod CREATE latency through a real kube-apiserver, side by side (SPEC §10):
#   (a) no admission policy, (b) runner-fence (release build, both webhooks),
#   (c) the closest in-tree equivalent (MutatingAdmissionPolicy + ValidatingAdmissionPolicy,
#       scripts/bench-apiserver/in-tree.yaml).
# Same pods, same run (round-robin), same machine. Usage: bash scripts/bench-apiserver.sh [N]
# (default 500 creations per configuration). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
dir=$(mktemp -d /tmp/runner-fence-bench.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  bash scripts/cluster/down.sh "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cargo build --release --locked --quiet --example apiserver_latency
cargo build --release --locked --quiet
bash scripts/cluster/up.sh "$dir"
export KUBECONFIG="$dir/kubeconfig"
bash scripts/cluster/nodes.sh >/dev/null

for ns in bench-none bench-runner-fence bench-in-tree; do kubectl create namespace "$ns" >/dev/null; done
for ns in bench-none bench-runner-fence bench-in-tree; do
  until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
done

# runner-fence for bench-runner-fence only.
sed 's/namespaces: \[gitlab-runner\]/namespaces: [bench-runner-fence]/' examples/policy.yaml > "$dir/policy.yaml"
target/release/runner-fence certs generate --san 127.0.0.1 --out "$dir/certs" >/dev/null
port=18543
target/release/runner-fence serve --policy "$dir/policy.yaml" --tls-cert "$dir/certs/tls.crt" \
  --tls-key "$dir/certs/tls.key" --addr "127.0.0.1:$port" --admin-addr 127.0.0.1:18580 \
  --log-format json >"$dir/webhook.log" 2>&1 &
pid=$!
until curl -sf http://127.0.0.1:18580/readyz >/dev/null; do sleep 0.1; done
target/release/runner-fence render webhooks --policy "$dir/policy.yaml" \
  --url "https://127.0.0.1:$port" --ca-bundle "$dir/certs/ca.crt" | kubectl apply -f - >/dev/null
kubectl apply -f scripts/bench-apiserver/in-tree.yaml >/dev/null

# Both setups must really act before anything is measured.
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"probe-"},"spec":{"tolerations":[{"operator":"Exists"}],"containers":[{"name":"c","image":"busybox"}]}}'
for ns in bench-runner-fence bench-in-tree; do
  for _ in $(seq 1 100); do
    if ! echo "$probe" | kubectl -n "$ns" create --dry-run=server -f - >/dev/null 2>&1; then continue 2; fi
    sleep 0.2
  done
  echo "admission in $ns never took effect" >&2; exit 1
done

echo "== $n pod creations per configuration, round-robin"
target/release/examples/apiserver_latency "$n" bench-none bench-runner-fence bench-in-tree | tee "$dir/result.json"
