# Shared by bench-http.sh and soak.sh: tools, builds and request bodies.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need_oha() {
  if ! command -v oha >/dev/null 2>&1; then
    echo "== installing oha with cargo (once)"
    cargo install oha --locked --quiet
  fi
}

# SKIP_BUILD=1 uses the release binaries as they are (a benchmark of the build just made).
build_release() {
  if [ -z "${SKIP_BUILD:-}" ]; then
    echo "== building release binaries"
    cargo build --release --locked --quiet --bin runner-fence --example noop_webhook
  fi
  RF="$ROOT/target/release/runner-fence"
  NOOP="$ROOT/target/release/examples/noop_webhook"
}

# The realistic body: a job pod with build, helper, init-permissions and two
# services, as the apiserver sends it: compact JSON with managedFields, env and
# defaults (~33 KB).
# /mutate gets it as created; /validate gets it after the mutation patch.
make_bodies() {
  cp tests/data/job-with-services.json "$WORK/mutate.json"
  "$RF" eval --output json tests/data/job-with-services.json > "$WORK/eval.json" || true
  python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
review = json.load(open(f"{w}/mutate.json"))
json.dump(review, open(f"{w}/mutate.json", "w"), separators=(",", ":"))
review["request"]["object"] = json.load(open(f"{w}/eval.json"))["pod"]
json.dump(review, open(f"{w}/validate.json", "w"), separators=(",", ":"))
PY
}

wait_http() { # url, seconds
  for _ in $(seq 1 $(( $2 * 20 ))); do
    curl -sk -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2; return 1
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
