#!/usr/bin/env bash
# Memory and start-up: ready time, RSS after 100,000 reviews with 5,000 nodes in
# the node view, and RSS over a soak. Loopback only, bounded.
#   scripts/soak.sh                      # 100k reviews, then a 60 s soak
#   SOAK_SECONDS=600 scripts/soak.sh     # the 10-minute soak
source "$(dirname "$0")/bench_common.sh"
REVIEWS=${REVIEWS:-100000}
SOAK_SECONDS=${SOAK_SECONDS:-60}
NODES=${NODES:-5000}
need_oha
build_release
make_bodies

python3 - "$WORK/nodes.json" "$NODES" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
nodes = []
for i in range(n):
    w = "gitlab" if i % 100 == 0 else "gitlab-runner"
    nodes.append({"name": f"ip-10-{i // 250}-{i % 250}-1.eu-west-1.compute.internal",
                  "labels": {"workload": w, "topology.kubernetes.io/zone": "eu-west-1" + "abc"[i % 3],
                             "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m6i.2xlarge"},
                  "taints": [{"key": "workload", "value": w, "effect": "NoSchedule"}]})
json.dump(nodes, open(path, "w"))
PY

echo "== start-up: time to /readyz 200 (no node cache)"
python3 - "$RF" "$WORK" <<'PY'
import subprocess, sys, time, urllib.request
rf, work = sys.argv[1], sys.argv[2]
times = []
for _ in range(5):
    t0 = time.monotonic()
    p = subprocess.Popen([rf, "serve", "--addr", "127.0.0.1:28443", "--admin-addr", "127.0.0.1:28080",
                          "--ca-out", f"{work}/ready-ca.crt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if urllib.request.urlopen("http://127.0.0.1:28080/readyz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.002)
        if time.monotonic() - t0 > 10:
            break
    times.append((time.monotonic() - t0) * 1000)
    p.terminate(); p.wait()
print("ready in ms:", " ".join(f"{t:.0f}" for t in times), f"(median {sorted(times)[2]:.0f} ms)")
PY

echo "== $REVIEWS reviews with $NODES nodes in the node view"
"$RF" serve --addr 127.0.0.1:18443 --admin-addr 127.0.0.1:18080 --ca-out "$WORK/rf-ca.crt" \
  --nodes-file "$WORK/nodes.json" > "$WORK/rf.log" 2>&1 & RFPID=$!; PIDS+=($RFPID)
wait_http http://127.0.0.1:18080/readyz 10
echo "RSS after start: $(rss_kib $RFPID) KiB"
half=$((REVIEWS / 2))
oha --no-tui --output-format quiet -n "$half" -c 16 -m POST -T application/json -D "$WORK/validate.json" \
  --cacert "$WORK/rf-ca.crt" https://localhost:18443/validate
oha --no-tui --output-format quiet -n "$((REVIEWS - half))" -c 16 -m POST -T application/json -D "$WORK/mutate.json" \
  --cacert "$WORK/rf-ca.crt" https://localhost:18443/mutate
reviewed=$(curl -s http://127.0.0.1:18080/metrics | awk '/^runner_fence_reviews_total/ {s += $NF} END {print s}')
echo "RSS after $reviewed reviews: $(rss_kib $RFPID) KiB (nodes in view: $(curl -s http://127.0.0.1:18080/metrics | awk '/^runner_fence_node_cache_nodes/ {print $NF}'))"

if [ "$SOAK_SECONDS" -gt 0 ]; then
  echo "== soak: $SOAK_SECONDS s at c=16, RSS sampled every 5 s"
  oha --no-tui --output-format quiet -z "${SOAK_SECONDS}s" -c 16 -m POST -T application/json -D "$WORK/validate.json" \
    --cacert "$WORK/rf-ca.crt" https://localhost:18443/validate & LOAD=$!
  samples=()
  for _ in $(seq 1 $((SOAK_SECONDS / 5))); do
    sleep 5
    samples+=("$(rss_kib $RFPID)")
  done
  wait $LOAD || true
  echo "RSS samples (KiB): ${samples[*]}"
  python3 -c "
s = [int(x) for x in '${samples[*]}'.split()]
h = len(s) // 2
print(f'first half max {max(s[:h] or [0])} KiB, second half max {max(s[h:] or [0])} KiB, growth {max(s[h:] or [0]) - max(s[:h] or [0])} KiB')
"
fi
echo "machine: $(nproc) cores, $(uname -sr)"
