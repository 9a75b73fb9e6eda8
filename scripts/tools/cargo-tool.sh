#!/usr/bin/env bash
# A cargo subcommand from crates.io, installed once per machine with `cargo install
# --locked` into ~/.cache/runner-fence/NAME/VERSION (its own lock file, so the same
# dependency versions every time). Prints the path of the binary on the last line.
#
#   cargo-tool.sh CRATE VERSION [BINARY]
set -euo pipefail
crate=$1 version=$2 binary=${3:-$1}
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
root="$CACHE/$crate/$version"
if [ -x "$root/bin/$binary" ]; then
  echo "$root/bin/$binary"
  exit 0
fi
echo "== installing $crate $version into $root (cargo install --locked)" >&2
# Its own target directory under the cache, removed afterwards: nothing lands in the checkout.
cargo install --locked --quiet --root "$root" --version "=$version" \
  --target-dir "$root/build" "$crate" >&2
rm -rf "$root/build"
[ -x "$root/bin/$binary" ] || { echo "scripts/tools/cargo-tool.sh: $crate $version installed no $binary" >&2; exit 1; }
echo "$root/bin/$binary"
