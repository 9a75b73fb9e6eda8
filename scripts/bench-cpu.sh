#!/usr/bin/env bash
# Server CPU per request: runner-fence next to the no-op webhook, measured on the servers
# themselves (perf stat -e task-clock -p PID, every thread of the process) over a fixed
# request count, interleaved, a few rounds. Steadier than rps on a shared machine: the load
# generator's own CPU and the other processes' do not enter it. Loopback only, bounded by
# the request count.
#   scripts/bench-cpu.sh                          # 20,000 requests, c=16, 3 rounds, raw
#   REQUESTS=10000 ROUNDS=5 CONC=16 BASELINE=dynamic scripts/bench-cpu.sh
#   LOG_FORMAT=json scripts/bench-cpu.sh          # the chart's log format (default plain)
#   COMPARE=/path/to/older/runner-fence scripts/bench-cpu.sh   # a second build beside it
# SKIP_BUILD=1 uses the release binaries as they are.
source "$(dirname "$0")/bench_common.sh"
REQUESTS=${REQUESTS:-20000}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-16}
BASELINE=${BASELINE:-raw}
LOG_FORMAT=${LOG_FORMAT:-plain}
COMPARE=${COMPARE:-}
need_oha
command -v perf >/dev/null || { echo "bench-cpu.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
build_release
[ -z "$COMPARE" ] || [ -x "$COMPARE" ] || { echo "bench-cpu.sh: COMPARE=$COMPARE is not an executable" >&2; exit 1; }
make_bodies

"$NOOP" 127.0.0.1:19443 "$WORK/noop-ca.crt" "$BASELINE" > "$WORK/noop.log" 2>&1 & NOOP_PID=$!; PIDS+=($!)
"$RF" serve --addr 127.0.0.1:18443 --admin-addr 127.0.0.1:18080 --ca-out "$WORK/rf-ca.crt" \
  --log-format "$LOG_FORMAT" > "$WORK/rf.log" 2>&1 & RF_PID=$!; PIDS+=($!)
wait_http http://127.0.0.1:18080/readyz 10
if [ -n "$COMPARE" ]; then
  "$COMPARE" serve --addr 127.0.0.1:17443 --admin-addr 127.0.0.1:17080 --ca-out "$WORK/cmp-ca.crt" \
    --log-format "$LOG_FORMAT" > "$WORK/cmp.log" 2>&1 & CMP_PID=$!; PIDS+=($!)
  wait_http http://127.0.0.1:17080/readyz 10
fi
wait_http https://127.0.0.1:19443/ 10 || true
sleep 0.5

cpu_us() { # pid url ca body -> server CPU microseconds per request, and rps
  perf stat -x, -e task-clock -p "$1" -o "$WORK/perf.txt" -- \
    oha --no-tui --output-format json -n "$REQUESTS" -c "$CONC" -m POST -T application/json \
      -D "$4" --cacert "$3" "$2" > "$WORK/oha.json"
  python3 - "$WORK/perf.txt" "$WORK/oha.json" "$REQUESTS" <<'PY'
import json, sys
ms = next(float(l.split(",")[0]) for l in open(sys.argv[1]) if "task-clock" in l)
d = json.load(open(sys.argv[2]))
ok = d.get("statusCodeDistribution", {}).get("200", 0)
if ok != int(sys.argv[3]):
    print(f"only {ok} of {sys.argv[3]} answered 200: {d.get('statusCodeDistribution')}", file=sys.stderr)
    sys.exit(1)
print(f"{ms * 1000 / ok:.1f} {d['summary']['requestsPerSec']:.0f}")
PY
}

echo
echo "server CPU per request (us) and rps, $REQUESTS requests at c=$CONC, baseline $BASELINE, log format $LOG_FORMAT; load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$COMPARE" ]; then
  printf '%-6s %-9s | %8s %7s | %8s %7s | %8s %7s | %6s %6s\n' round endpoint noop-us rps rf-us rps cmp-us rps cpu-x cmp-x
else
  printf '%-6s %-9s | %8s %7s | %8s %7s | %6s\n' round endpoint noop-us rps rf-us rps cpu-x
fi
for r in $(seq 1 "$ROUNDS"); do
  for ep in validate mutate; do
    read -r bus brps < <(cpu_us "$NOOP_PID" "https://localhost:19443/$ep" "$WORK/noop-ca.crt" "$WORK/$ep.json")
    read -r rus rrps < <(cpu_us "$RF_PID" "https://localhost:18443/$ep" "$WORK/rf-ca.crt" "$WORK/$ep.json")
    if [ -n "$COMPARE" ]; then
      read -r cus crps < <(cpu_us "$CMP_PID" "https://localhost:17443/$ep" "$WORK/cmp-ca.crt" "$WORK/$ep.json")
      python3 -c "print('%-6s %-9s | %8s %7s | %8s %7s | %8s %7s | %6.2f %6.2f' % ('$r', '$ep', '$bus', '$brps', '$rus', '$rrps', '$cus', '$crps', float('$rus') / float('$bus'), float('$cus') / float('$bus')))"
    else
      python3 -c "print('%-6s %-9s | %8s %7s | %8s %7s | %6.2f' % ('$r', '$ep', '$bus', '$brps', '$rus', '$rrps', float('$rus') / float('$bus')))"
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); log lines written by runner-fence: $(grep -c '' "$WORK/rf.log")"
