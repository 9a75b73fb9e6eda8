#!/usr/bin/env bash
# Pod CREATE latency through a real kube-apiserver, side by side (SPEC §10):
#   (a) no admission policy, (b) runner-fence (release build, both webhooks),
#   (c) the closest in-tree equivalent (MutatingAdmissionPolicy + ValidatingAdmissionPolicy,
#       scripts/bench-apiserver/in-tree.yaml),
#   (d) runner-fence's in-tree backstop alone (`render admission-policy`: the
#       ValidatingAdmissionPolicy only; it gets the pod as the mutation leaves it).
# Same pods, same run (round-robin), same machine. Usage: bash scripts/bench-apiserver.sh [N]
# (default 500 creations per configuration). BURST=C sends them as bursts of 100 per
# configuration with C in flight (default 1: one at a time). The control plane takes
# free ports (RF_APISERVER_PORT=0 unless set), so it runs beside the e2e cluster.
# Everything listens on 127.0.0.1.
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

# One build for both (built apart, the examples' dev-dependency features make
# cargo rebuild the dependencies each time).
cargo build --release --locked --quiet --bin runner-fence --example apiserver_latency
RF_APISERVER_PORT=${RF_APISERVER_PORT:-0} bash scripts/cluster/up.sh "$dir"
export KUBECONFIG="$dir/kubeconfig"
bash scripts/cluster/nodes.sh >/dev/null

namespaces="bench-none bench-runner-fence bench-in-tree bench-backstop"
for ns in $namespaces; do kubectl create namespace "$ns" >/dev/null; done
for ns in $namespaces; do
  until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
done

# runner-fence for bench-runner-fence only.
sed 's/namespaces: \[gitlab-runner\]/namespaces: [bench-runner-fence]/' examples/policy.yaml > "$dir/policy.yaml"
target/release/runner-fence certs generate --san 127.0.0.1 --out "$dir/certs" >/dev/null
port=${RF_BENCH_WEBHOOK_PORT:-18543}
admin=${RF_BENCH_ADMIN_PORT:-18580}
target/release/runner-fence serve --policy "$dir/policy.yaml" --tls-cert "$dir/certs/tls.crt" \
  --tls-key "$dir/certs/tls.key" --addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$admin" \
  --log-format json >"$dir/webhook.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null; do sleep 0.1; done
target/release/runner-fence render webhooks --policy "$dir/policy.yaml" \
  --url "https://127.0.0.1:$port" --ca-bundle "$dir/certs/ca.crt" | kubectl apply -f - >/dev/null
kubectl apply -f scripts/bench-apiserver/in-tree.yaml >/dev/null
# The backstop alone, for bench-backstop; its pods come as the mutation leaves them.
sed 's/namespaces: \[gitlab-runner\]/namespaces: [bench-backstop]/' examples/policy.yaml > "$dir/backstop-policy.yaml"
target/release/runner-fence render admission-policy --policy "$dir/backstop-policy.yaml" | kubectl apply -f - >/dev/null
# (the fixture's review is for gitlab-runner: the reference policy's mutation, the same profile)
target/release/runner-fence eval --output json \
  tests/data/plain-job.json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["pod"]))' > "$dir/mutated-pod.json"

# Both setups must really act before anything is measured.
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"probe-"},"spec":{"tolerations":[{"operator":"Exists"}],"containers":[{"name":"c","image":"busybox"}]}}'
for ns in bench-runner-fence bench-in-tree bench-backstop; do
  for _ in $(seq 1 100); do
    if ! echo "$probe" | kubectl -n "$ns" create --dry-run=server -f - >/dev/null 2>&1; then continue 2; fi
    sleep 0.2
  done
  echo "admission in $ns never took effect" >&2; exit 1
done

echo "== $n pod creations per configuration, round-robin, ${BURST:-1} in flight; load $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/examples/apiserver_latency "$n" bench-none bench-runner-fence bench-in-tree \
  "bench-backstop=$dir/mutated-pod.json" | tee "$dir/result.json"
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
