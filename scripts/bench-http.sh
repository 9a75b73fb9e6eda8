#!/usr/bin/env bash
# HTTP load: runner-fence next to the no-op axum+rustls baseline, same TLS, same
# body, same load generator (oha, keep-alive), loopback only, bounded in time.
#   scripts/bench-http.sh                  # 10 s per scenario
#   DURATION=5s CONCURRENCY="1 16" scripts/bench-http.sh
source "$(dirname "$0")/bench_common.sh"
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-1 16 64}
need_oha
build_release
make_bodies

# BASELINE=dynamic (default: kube-rs AdmissionReview<DynamicObject>) or raw (object kept as text).
BASELINE=${BASELINE:-dynamic}
"$NOOP" 127.0.0.1:19443 "$WORK/noop-ca.crt" "$BASELINE" > "$WORK/noop.log" 2>&1 & PIDS+=($!)
"$RF" serve --addr 127.0.0.1:18443 --admin-addr 127.0.0.1:18080 --ca-out "$WORK/rf-ca.crt" \
  > "$WORK/rf.log" 2>&1 & PIDS+=($!)
wait_http http://127.0.0.1:18080/readyz 10
wait_http https://127.0.0.1:19443/ 10 || true
sleep 0.5

run() { # name url ca body conc
  oha --no-tui --output-format json -z "$DURATION" -c "$5" -m POST -T application/json \
    -D "$4" --cacert "$3" "$2" > "$WORK/$1.json"
  python3 - "$WORK/$1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f'{s["requestsPerSec"]:.0f} {p["p50"]*1000:.3f} {p["p99"]*1000:.3f} {s["successRate"]:.4f} {json.dumps(codes, separators=(",", ":"))}')
PY
}

echo
printf '%-9s %5s | %9s %8s %8s | %9s %8s %8s | %6s %6s\n' endpoint c base-rps p50-ms p99-ms rf-rps p50-ms p99-ms rps-x p99-x
for ep in validate mutate; do
  for c in $CONCURRENCY; do
    # Interleaved, baseline first, so drift on a shared machine hits both.
    read -r brps bp50 bp99 bsucc bcodes < <(run "noop-$ep-$c" "https://localhost:19443/$ep" "$WORK/noop-ca.crt" "$WORK/$ep.json" "$c")
    read -r rrps rp50 rp99 rsucc rcodes < <(run "rf-$ep-$c" "https://localhost:18443/$ep" "$WORK/rf-ca.crt" "$WORK/$ep.json" "$c")
    python3 -c "
b, r = float('$brps'), float('$rrps'); bp, rp = float('$bp99'), float('$rp99')
print(f'%-9s %5s | %9.0f %8s %8s | %9.0f %8s %8s | %6.2f %6.2f' % ('$ep', '$c', b, '$bp50', '$bp99', r, '$rp50', '$rp99', r / b if b else 0, rp / bp if bp else 0))
"
    [ "$rsucc" = "1.0000" ] || echo "  runner-fence success rate $rsucc, status codes $rcodes"
    [ "$bsucc" = "1.0000" ] || echo "  baseline success rate $bsucc, status codes $bcodes"
  done
done
echo
echo "baseline: no-op webhook, parse=$BASELINE; body: tests/data/job-with-services.json, compact ($(wc -c < "$WORK/mutate.json") bytes to /mutate, $(wc -c < "$WORK/validate.json") to /validate)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); oha $(oha --version | awk '{print $2}'); duration $DURATION per scenario"
