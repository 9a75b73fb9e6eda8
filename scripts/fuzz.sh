#!/usr/bin/env bash
# libFuzzer on runner-fence (cargo fuzz on the stable toolchain via RUSTC_BOOTSTRAP=1).
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 600 s for each of admission_review, policy_loader, quantity, structured_pod,
# backstop_differential (the Rust engine against the backstop's CEL, as tests/backstop.rs).
# Seeds each corpus from tests/data and examples/, keeps corpora and any crash under
# fuzz/ (crashes in fuzz/artifacts/TARGET: fix, then add the input as a regression test).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(admission_review policy_loader quantity structured_pod backstop_differential)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seed() {
  local dir="fuzz/corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do cp -n "$f" "$dir/" 2>/dev/null || true; done
}
seed admission_review tests/data/*.json
seed policy_loader examples/policy.yaml examples/policy-audit.yaml
mkdir -p fuzz/corpus/quantity
for q in 500m 1Gi 2 1.5 8Gi 512Mi 100n 1e3 0.1 1Ki 1E 12345678901234567890; do
  printf '%s' "$q" > "fuzz/corpus/quantity/seed-$q"
done
mkdir -p fuzz/corpus/structured_pod fuzz/corpus/backstop_differential

for t in "${targets[@]}"; do
  echo "== $t for ${secs}s"
  log="fuzz/$t.log"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>"$log" || {
    echo "FINDING in $t: see $log and fuzz/artifacts/$t" >&2; tail -40 "$log" >&2; exit 1; }
  grep -E "^#[0-9]+\s+DONE" "$log" | tail -1
done
