#!/usr/bin/env bash
# Builds runner-fence's release artifacts from this checkout, without a container engine or a
# base image: per platform a static binary and its CycloneDX SBOM, then one OCI image layout
# (an index of the platforms) written by scripts/release/oci_image.py. The release pipeline's
# build job (.gitlab-ci.yml) runs this script, and so does CI here (scripts/release/check-image.sh).
#
#   scripts/release/build-image.sh [OUT]        (default: target/dist)
#
# Environment:
#   PLATFORMS         "linux/amd64" (default) and/or "linux/arm64", space-separated
#   SOURCE_DATE_EPOCH image timestamps (default: the commit time of HEAD)
#   RUNNER_FENCE_STATIC_TARGET_DIR   cargo target dir of the static builds (default
#                     ~/.cache/runner-fence/target-static, so CI rebuilds only what changed)
#   CI_PROJECT_URL, CI_COMMIT_SHA, CI_COMMIT_TAG   set by GitLab; read for the labels and to
#                     check that a tag vX.Y.Z matches the version
#
# The binaries are x86_64/aarch64-unknown-linux-gnu with -C target-feature=+crt-static (glibc
# linked in statically: no libc in the image, and glibc's allocator rather than musl's).
# linux/arm64 is cross-compiled: rustup's aarch64-unknown-linux-gnu std, Debian's
# gcc-aarch64-linux-gnu as linker and C compiler (ring) and libc6-dev-arm64-cross for the
# static glibc; missing pieces are named, never skipped.
#
# OUT gets: runner-fence-VERSION-linux-ARCH (binary), runner-fence-VERSION-linux-ARCH.cdx.json
# (SBOM), SHA256SUMS, oci/ (the layout, tagged VERSION) and image.env (VERSION, REVISION,
# CREATED, IMAGE_DIGEST and DIGEST_linux_ARCH of each platform's manifest).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/dist}
PLATFORMS=${PLATFORMS:-linux/amd64}
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
target_dir=${RUNNER_FENCE_STATIC_TARGET_DIR:-$CACHE/target-static}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
fail() { echo "build-image.sh: $*" >&2; exit 1; }

version=$(cargo metadata --locked --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "runner-fence"))')
chart_version=$(sed -n 's/^version: *//p' charts/runner-fence/Chart.yaml)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/runner-fence/Chart.yaml)
[ "$chart_version" = "$version" ] && [ "$app_version" = "$version" ] \
  || fail "Cargo.toml has $version but charts/runner-fence/Chart.yaml has version $chart_version, appVersion $app_version"
if [ -n "${CI_COMMIT_TAG:-}" ] && [ "$CI_COMMIT_TAG" != "v$version" ]; then
  fail "tag $CI_COMMIT_TAG does not match the version $version (expected v$version)"
fi
revision=${CI_COMMIT_SHA:-$(git rev-parse HEAD)}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
source_url=${CI_PROJECT_URL:-https://gitlab.com/runner-fence/runner-fence}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || fail "$ca_bundle is missing: install Debian's ca-certificates"
cyclonedx=${CARGO_CYCLONEDX:-$(bash scripts/tools/cargo-tool.sh cargo-cyclonedx 0.5.9 | tail -1)}

rm -rf "$out"
mkdir -p "$out"
binaries=()
for platform in $PLATFORMS; do
  arch=${platform#linux/}
  case $platform in
    linux/amd64) triple=x86_64-unknown-linux-gnu ;;
    linux/arm64) triple=aarch64-unknown-linux-gnu ;;
    *) fail "unsupported platform $platform (linux/amd64, linux/arm64)" ;;
  esac
  rustc --print sysroot >/dev/null
  [ -d "$(rustc --print sysroot)/lib/rustlib/$triple/lib" ] \
    || fail "the Rust standard library for $triple is not installed: rustup target add $triple"
  env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  if [ "$triple" = aarch64-unknown-linux-gnu ] && [ "$(uname -m)" != aarch64 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null \
      || fail "no aarch64-linux-gnu-gcc: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    [ -f /usr/aarch64-linux-gnu/lib/libc.a ] \
      || fail "no static glibc for aarch64: apt-get install libc6-dev-arm64-cross"
    export "CARGO_TARGET_${env_triple}_LINKER=aarch64-linux-gnu-gcc"
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  fi
  # Target-only flags (with --target, build scripts and proc macros stay dynamic host code).
  # The registry path is remapped so the binary does not depend on where CARGO_HOME is.
  export "CARGO_TARGET_${env_triple}_RUSTFLAGS=-C target-feature=+crt-static --remap-path-prefix=$CARGO_HOME/registry/src=/cargo/registry/src"
  echo "== cargo build --profile dist --target $triple (static)"
  # GCC (ring's C) reads SOURCE_DATE_EPOCH, and cc-rs rebuilds when it changes: a fixed value
  # keeps the binary independent of the commit time and the cached build valid across commits.
  SOURCE_DATE_EPOCH=0 cargo build --locked --profile dist --target "$triple" --bin runner-fence --target-dir "$target_dir"
  bin="$out/runner-fence-$version-linux-$arch"
  cp "$target_dir/$triple/dist/runner-fence" "$bin"
  touch -d "@$epoch" "$bin"
  binaries+=(--binary "$platform=$bin")

  echo "== SBOM (CycloneDX, cargo-cyclonedx) for $triple"
  # cargo-cyclonedx writes next to Cargo.toml; move it out and make it reproducible.
  "$cyclonedx" cyclonedx --format json --spec-version 1.5 --target "$triple" \
    --override-filename "runner-fence-sbom.$arch" --quiet >/dev/null
  python3 scripts/release/sbom.py finish "runner-fence-sbom.$arch.json" "$bin.cdx.json" \
    --epoch "$epoch" --binary "$bin" --version "$version"
  rm -f "runner-fence-sbom.$arch.json"
done

echo "== OCI image layout ($PLATFORMS)"
digest=$(python3 scripts/release/oci_image.py build --out "$out/oci" --tag "$version" \
  --epoch "$epoch" --ca-bundle "$ca_bundle" --license LICENSE \
  --label "org.opencontainers.image.title=runner-fence" \
  --label "org.opencontainers.image.description=Admission webhook that keeps GitLab Runner job pods off GitLab's own Kubernetes nodes" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=$source_url" \
  --label "org.opencontainers.image.url=$source_url" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  "${binaries[@]}")

(cd "$out" && sha256sum runner-fence-"$version"-linux-* > SHA256SUMS)
{
  echo "VERSION=$version"
  echo "REVISION=$revision"
  echo "CREATED=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
  echo "IMAGE_DIGEST=$digest"
  python3 - "$out/oci" "$digest" <<'PY'
import json, sys
blob = json.load(open(f"{sys.argv[1]}/blobs/sha256/{sys.argv[2].split(':', 1)[1]}"))
for m in blob["manifests"]:
    print(f"DIGEST_{m['platform']['os']}_{m['platform']['architecture']}={m['digest']}")
PY
} > "$out/image.env"
echo "== built in $out"
cat "$out/image.env"
cat "$out/SHA256SUMS"
