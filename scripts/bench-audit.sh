#!/usr/bin/env bash
# `runner-fence audit` and the node cache at the scale of a busy CI cluster, against
# a real kube-apiserver (scripts/cluster/, on free loopback ports, beside any other
# cluster): NODES Nodes (every GITLAB_EVERY-th one of GitLab's) and PODS pods, made
# with bounded concurrency by examples/scale_objects.rs. No kubelet: the pods are
# API objects, bound by spec.nodeName or held by a scheduling gate.
#
#   bash scripts/bench-audit.sh [DIR]          # DIR default /tmp/rf-scale
#   NODES=5000 PODS=20000 CONCURRENCY=32 APPLY=1 KEEP=1 bash scripts/bench-audit.sh
#
# The pods: 5% GitLab's own (namespace gitlab, on GitLab nodes, no runner marks);
# in gitlab-runner, 1% as created without runner-fence and bound to a GitLab node
# (what audit must find), 20% gated, the rest bound to runner nodes, those as
# runner-fence's mutation left them (tests/data/plain-job.json and
# job-with-services.json, patched by `runner-fence eval`).
# Measures: audit (json, policy-report) wall time and peak RSS (/usr/bin/time -v),
# the PolicyReports' count and size, with APPLY=1 `--apply` twice (first write, then
# nothing changed), and `serve --node-cache` RSS with NODES nodes. KEEP=1 leaves the
# cluster up (bash scripts/cluster/down.sh DIR); a DIR that already holds the
# objects (same NODES and PODS) is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m -- "${1:-/tmp/rf-scale}")
NODES=${NODES:-5000}
PODS=${PODS:-20000}
GITLAB_EVERY=${GITLAB_EVERY:-100}
CONCURRENCY=${CONCURRENCY:-32}
APPLY=${APPLY:-0}
KEEP=${KEEP:-0}
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ "$KEEP" = 1 ] || bash scripts/cluster/down.sh "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== building release binaries"
cargo build --release --locked --quiet --bin runner-fence --example scale_objects
RF=target/release/runner-fence
MAKE=target/release/examples/scale_objects
out="$dir.results"
mkdir -p "$out"

load() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"; }

reuse=0
if [ -f "$dir/kubeconfig" ] && KUBECONFIG="$dir/kubeconfig" kubectl get --raw /readyz >/dev/null 2>&1 \
  && [ "$(cat "$dir/scale-objects" 2>/dev/null)" = "$NODES $PODS $GITLAB_EVERY" ]; then
  reuse=1
  echo "== reusing the cluster in $dir ($NODES nodes, $PODS pods)"
else
  RF_APISERVER_PORT=${RF_APISERVER_PORT:-0} bash scripts/cluster/up.sh "$dir" >/dev/null
fi
set -a; . "$dir/env"; set +a

if [ "$reuse" = 0 ]; then
  for ns in gitlab gitlab-runner; do kubectl create namespace "$ns" >/dev/null; done
  for ns in gitlab gitlab-runner; do
    until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
  done
  # Job pods as runner-fence's mutation left them, and GitLab's own pods.
  for f in plain-job job-with-services; do
    "$RF" eval --output json "tests/data/$f.json" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["pod"]))' > "$dir/$f.mutated.json"
  done
  cat > "$dir/gitlab-pod.json" <<'EOF'
{"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "webservice", "release": "gitlab"}},
 "spec": {"containers": [{"name": "webservice", "image": "registry.gitlab.com/gitlab-org/build/cng/gitlab-webservice-ee:v18.0.0",
   "resources": {"requests": {"cpu": "300m", "memory": "2.5G"}}, "ports": [{"containerPort": 8080}]}]}}
EOF
  gitlab_pods=$(( PODS / 20 )); bad=$(( PODS / 100 )); runner=$(( PODS - gitlab_pods ))
  gated=$(( runner / 5 )); bound=$(( runner - gated - bad ))
  echo "== creating $NODES nodes and $PODS pods ($gitlab_pods GitLab's, $bound bound job pods, $gated gated, $bad on GitLab nodes), $CONCURRENCY at a time; $(load)"
  "$MAKE" nodes "$NODES" "$GITLAB_EVERY" "$CONCURRENCY"
  "$MAKE" pods "$gitlab_pods" 0 gitlab gitlab "$CONCURRENCY" "$NODES" "$GITLAB_EVERY" "$dir/gitlab-pod.json"
  "$MAKE" pods "$bound" 0 gitlab-runner runner "$CONCURRENCY" "$NODES" "$GITLAB_EVERY" \
    "$dir/plain-job.mutated.json" "$dir/job-with-services.mutated.json"
  "$MAKE" pods "$gated" "$bound" gitlab-runner gated "$CONCURRENCY" "$NODES" "$GITLAB_EVERY" \
    "$dir/plain-job.mutated.json" "$dir/job-with-services.mutated.json"
  "$MAKE" pods "$bad" $(( bound + gated )) gitlab-runner gitlab "$CONCURRENCY" "$NODES" "$GITLAB_EVERY" \
    tests/data/plain-job.json
  echo "$NODES $PODS $GITLAB_EVERY" > "$dir/scale-objects"
fi
echo "nodes: $(kubectl get --raw '/api/v1/nodes?limit=1' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) + d["metadata"].get("remainingItemCount", 0))'), pods: $(kubectl get --raw '/api/v1/pods?limit=1' | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) + d["metadata"].get("remainingItemCount", 0))')"

# timed NAME CMD...: wall time, peak RSS and exit code of one run, output kept.
timed() {
  local name=$1; shift
  local rc=0
  /usr/bin/time -v -o "$out/$name.time" "$@" > "$out/$name.out" 2> "$out/$name.err" || rc=$?
  python3 - "$out/$name.time" "$out/$name.out" "$name" "$rc" <<'PY'
import os, re, sys
t = open(sys.argv[1]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
cpu = float(re.search(r"User time \(seconds\): (\S+)", t).group(1)) + float(re.search(r"System time \(seconds\): (\S+)", t).group(1))
print(f"{sys.argv[3]:<22} wall {secs:6.1f} s  cpu {cpu:6.1f} s  peak RSS {rss / 1024:7.1f} MiB  exit {sys.argv[4]}  output {os.path.getsize(sys.argv[2]) / 1048576:.1f} MiB")
PY
}

echo "== audit ($(load))"
timed audit-text "$RF" audit
timed audit-json "$RF" audit --output json
timed audit-policy-report "$RF" audit --output policy-report
python3 - "$out/audit-json.out" "$out/audit-policy-report.out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"report: {r['nodes_seen']} nodes seen, {len(r['protected_nodes'])} protected, {len(r['job_pods'])} job pods, "
      f"{sum(p['on_protected_node'] for p in r['job_pods'])} on protected nodes, "
      f"{len(r['delete_or_fix_before_enforcing'])} to delete or fix, {len(r['unreadable'])} unreadable")
docs = [d for d in open(sys.argv[2]).read().split("---\n") if d.strip()]
sizes = sorted(len(d.encode()) for d in docs)
print(f"policy-report: {len(docs)} PolicyReports, largest {sizes[-1]} bytes, median {sizes[len(sizes) // 2]} bytes")
PY

if [ "$APPLY" = 1 ]; then
  kubectl apply -f manifests/extras/policyreport-crd.yaml >/dev/null
  kubectl wait --for condition=established --timeout=60s crd/policyreports.wgpolicyk8s.io >/dev/null
  echo "== audit --apply ($(load))"
  timed apply-first "$RF" audit --output policy-report --apply
  grep PolicyReports "$out/apply-first.err" || tail -3 "$out/apply-first.err"
  timed apply-again "$RF" audit --output policy-report --apply
  grep PolicyReports "$out/apply-again.err" || tail -3 "$out/apply-again.err"
  kubectl get --raw '/apis/wgpolicyk8s.io/v1alpha2/policyreports?limit=1' \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("PolicyReports in the cluster:", len(d["items"]) + d["metadata"].get("remainingItemCount", 0))'
fi

echo "== serve --node-cache with $NODES nodes ($(load))"
"$RF" serve --node-cache --addr 127.0.0.1:0 --admin-addr 127.0.0.1:18780 --shutdown-delay-seconds 0 \
  --log-format json > "$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  n=$(curl -sf http://127.0.0.1:18780/metrics 2>/dev/null | awk '/^runner_fence_node_cache_nodes / {print $2}')
  [ "${n:-0}" = "$NODES" ] && curl -sf http://127.0.0.1:18780/readyz >/dev/null && break
  sleep 0.1
done
[ "${n:-0}" = "$NODES" ] || { echo "node cache never held $NODES nodes (has ${n:-none})" >&2; exit 1; }
rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
echo "serve: ready with $n nodes: RSS $(rss) (peak $(hwm))"
sleep 30
echo "serve: 30 s later: RSS $(rss) (peak $(hwm))"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

# The same with the continuous audit: LOOP_PASSES passes, LOOP_SECONDS apart
# (PolicyReports written in place when APPLY=1 installed the CRD), RSS sampled.
LOOP_PASSES=${LOOP_PASSES:-2}
LOOP_SECONDS=${LOOP_SECONDS:-30}
reports=--audit-no-reports
[ "$APPLY" = 1 ] && reports=
echo "== serve --node-cache --audit-interval-seconds $LOOP_SECONDS $reports ($(load))"
"$RF" serve --node-cache --audit-interval-seconds "$LOOP_SECONDS" $reports --addr 127.0.0.1:0 \
  --admin-addr 127.0.0.1:18780 --shutdown-delay-seconds 0 --log-format json > "$out/serve-loop.log" 2>&1 &
pid=$!
runs() { curl -sf http://127.0.0.1:18780/metrics 2>/dev/null | awk '/^runner_fence_audit_runs_total/ {n += $2} END {print n + 0}'; }
peak=0 t0=$(date +%s)
while [ "$(runs)" -lt "$LOOP_PASSES" ] && [ $(( $(date +%s) - t0 )) -lt 900 ]; do
  r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status"); [ "$r" -gt "$peak" ] && peak=$r
  sleep 1
done
echo "serve with the audit loop: $(runs) passes in $(( $(date +%s) - t0 )) s; RSS now $(rss), peak sampled $(( peak / 1024 )) MiB, VmHWM $(hwm)"
curl -sf http://127.0.0.1:18780/metrics | grep -E '^runner_fence_audit_(duration_seconds|pods_checked|runs_total)' || true
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
echo "results and outputs in $out; $(load)"
