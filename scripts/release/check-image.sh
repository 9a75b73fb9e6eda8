#!/usr/bin/env bash
# CI's release step: builds the image as the release pipeline does (build-image.sh, linux/amd64
# here), proves it reproducible and its SBOM right, pushes image and chart to a loopback
# registry (local-registry.sh), pulls the image back, unpacks its filesystem with umoci and
# starts the webhook from it as the image's own user, which must answer AdmissionReviews over
# TLS; then `helm show chart` / `helm template` from oci://127.0.0.1:PORT prove the chart is
# pullable and points at the pushed image. Every missing tool or failed check fails the run.
#
#   scripts/release/check-image.sh [DIST]     (default target/dist; kept for the e2e)
#
# Needs root (chroot into the image's filesystem, then the image's uid and gid), python3,
# curl, Debian's skopeo and umoci (installed here when missing), Go (registry, Helm: cached).
# With KEEP_REGISTRY=1 the registry is left running (local-registry.sh env / down).
set -euo pipefail
cd "$(dirname "$0")/../.."
dist=${1:-target/dist}
fail() { echo "FAIL: check-image.sh: $*" >&2; exit 1; }
step() { echo "== $* (+${SECONDS}s)"; }
[ "$(id -u)" -eq 0 ] || fail "needs root: the webhook is started with chroot as the image's user"

if ! command -v skopeo >/dev/null || ! command -v umoci >/dev/null; then
  step "apt-get install skopeo umoci"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends skopeo umoci >/dev/null
fi
for tool in skopeo umoci curl python3 chroot; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
python3 -m pip install --quiet --disable-pip-version-check 'cyclonedx-python-lib[json-validation]==11.12.0' 2>&1 \
  | grep -v -i "running pip as the 'root' user" || true

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -9 "$server_pid" || true; fi
  if [ "${KEEP_REGISTRY:-0}" != 1 ]; then bash scripts/release/local-registry.sh down || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step "build (scripts/release/build-image.sh, the release pipeline's build script)"
bash scripts/release/build-image.sh "$dist"
# shellcheck disable=SC1090,SC1091
. "$dist/image.env"
bin="$dist/runner-fence-$VERSION-linux-amd64"

step "reproducible: the same script again gives the same bytes"
bash scripts/release/build-image.sh "$work/again" > "$work/again.log" 2>&1 || { cat "$work/again.log" >&2; fail "second build failed"; }
again=$(sed -n 's/^IMAGE_DIGEST=//p' "$work/again/image.env")
[ "$again" = "$IMAGE_DIGEST" ] || fail "image digest differs between two builds: $IMAGE_DIGEST, $again"
cmp "$bin.cdx.json" "$work/again/runner-fence-$VERSION-linux-amd64.cdx.json" || fail "the SBOM differs between two builds"
cmp "$dist/SHA256SUMS" "$work/again/SHA256SUMS" || fail "the binaries differ between two builds"
rm -rf "$work/again"
echo "same image $IMAGE_DIGEST, SBOM and binary"

step "oci_image.py refuses what would not start in the image"
refused() { # EXPECTED-MESSAGE ARGS...: oci_image.py layer must fail saying so
  local want=$1 out
  shift
  if out=$(python3 scripts/release/oci_image.py layer --out "$work/refused.tar" \
      --ca-bundle /etc/ssl/certs/ca-certificates.crt --license LICENSE "$@" 2>&1); then
    fail "oci_image.py accepted $*"
  fi
  grep -q -- "$want" <<<"$out" || fail "oci_image.py $*: said '$out', expected '$want'"
}
refused "dynamically linked" --binary "linux/amd64=/usr/bin/env"
refused "ELF machine 62, but linux/arm64 needs 183" --binary "linux/arm64=$bin"
refused "not an ELF file" --binary "linux/amd64=LICENSE"

step "the binary runs with an empty environment"
env -i "$bin" --version | grep -qx "runner-fence $VERSION" || fail "$bin --version is not 'runner-fence $VERSION'"

step "SBOM (CycloneDX 1.5 schema, components against Cargo.lock)"
python3 scripts/release/sbom.py check "$bin.cdx.json" --binary "$bin" --version "$VERSION" --lock Cargo.lock

step "loopback registry (distribution, cached) and push"
bash scripts/release/local-registry.sh up
refs=$(bash scripts/release/local-registry.sh push "$dist")
echo "$refs"
repo=$(sed -n 's/^RUNNER_FENCE_IMAGE_REPOSITORY=//p' <<<"$refs")
chart=$(sed -n 's/^RUNNER_FENCE_CHART=//p' <<<"$refs")
[ -n "$repo" ] && [ -n "$chart" ] || fail "local-registry.sh push printed no references"

step "pull the image back for this machine's platform and check its labels"
skopeo --insecure-policy copy --quiet --src-tls-verify=false --override-os linux --override-arch amd64 \
  "docker://$repo:$VERSION" "oci:$work/pulled:$VERSION"
skopeo inspect --tls-verify=false "docker://$repo:$VERSION" > "$work/inspect.json"
python3 - "$work/inspect.json" "$VERSION" "$REVISION" "$CREATED" <<'PY'
import json, sys
info, version, revision, created = json.load(open(sys.argv[1])), *sys.argv[2:]
labels = info.get("Labels") or {}
want = {"org.opencontainers.image.version": version, "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.licenses": "Apache-2.0", "org.opencontainers.image.created": created}
bad = {k: (labels.get(k), v) for k, v in want.items() if labels.get(k) != v}
if not labels.get("org.opencontainers.image.source", "").startswith("https://"):
    bad["org.opencontainers.image.source"] = (labels.get("org.opencontainers.image.source"), "https://...")
if bad:
    sys.exit(f"FAIL: image labels (got, want): {bad}")
if info.get("Architecture") != "amd64" or info.get("Os") != "linux":
    sys.exit(f"FAIL: pulled {info.get('Os')}/{info.get('Architecture')}, expected linux/amd64")
print("labels:", ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in sorted(labels.items())))
PY

step "umoci unpack: the image's own filesystem and user"
umoci unpack --image "$work/pulled:$VERSION" "$work/bundle" > /dev/null
rootfs="$work/bundle/rootfs"
read -r uid gid entry < <(python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["process"]
print(p["user"]["uid"], p["user"]["gid"], p["args"][0])
PY
)
[ "$uid" -ne 0 ] && [ "$gid" -ne 0 ] || fail "the image runs as uid $uid gid $gid: it must not be root"
[ -x "$rootfs$entry" ] || fail "the entrypoint $entry is not in the image"
mapfile -t image_env < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["env"]))' "$work/bundle/config.json")
# The image has no shell and no env(1): chroot runs the entrypoint itself, with only the image's
# environment, as the image's user.
chroot=$(command -v chroot)
in_image() { env -i "${image_env[@]}" "$chroot" --userspec="$uid:$gid" --groups="$gid" "$rootfs" "$@"; }
echo "user $uid:$gid, entrypoint $entry, env ${image_env[*]}"

step "in the image, as $uid:$gid: certs generate, then serve"
in_image "$entry" certs generate --service runner-fence --namespace runner-fence --san 127.0.0.1 --out /tmp/tls > /dev/null
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) admin=$(free_port)
# exec: $! is then the webhook itself (env and chroot exec it in turn).
(exec env -i "${image_env[@]}" "$chroot" --userspec="$uid:$gid" --groups="$gid" "$rootfs" \
  "$entry" serve --addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$admin" \
  --tls-cert /tmp/tls/tls.crt --tls-key /tmp/tls/tls.key --shutdown-delay-seconds 0 \
  --log-format json > "$work/serve.log" 2>&1) &
server_pid=$!
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "the webhook exited at start"; }
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" || { cat "$work/serve.log" >&2; fail "not ready within 20 s"; }
running_uid=$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")
[ "$running_uid" = "$uid" ] || fail "the webhook runs as uid $running_uid, the image says $uid"

review() { # ENDPOINT FIXTURE -> response JSON, over TLS verified with the generated CA
  curl -fsS --cacert "$rootfs/tmp/tls/ca.crt" -H 'Content-Type: application/json' \
    --data-binary "@tests/data/$2" "https://127.0.0.1:$port/$1"
}
review validate job-with-toleration-overwrite.json > "$work/validate.json"
review mutate plain-job.json > "$work/mutate.json"
python3 - "$work" tests/data <<'PY'
import base64, json, sys
work, data = sys.argv[1:]
def check(endpoint, fixture, allowed):
    uid = json.load(open(f"{data}/{fixture}"))["request"]["uid"]
    r = json.load(open(f"{work}/{endpoint}.json"))
    if r.get("apiVersion") != "admission.k8s.io/v1" or r.get("kind") != "AdmissionReview":
        sys.exit(f"FAIL: /{endpoint}: not an AdmissionReview v1: {r}")
    resp = r["response"]
    if resp.get("uid") != uid or resp.get("allowed") is not allowed:
        sys.exit(f"FAIL: /{endpoint} {fixture}: uid {resp.get('uid')} allowed {resp.get('allowed')}, expected {uid} {allowed}")
    return resp
v = check("validate", "job-with-toleration-overwrite.json", False)
if "protected-nodes" not in v.get("status", {}).get("message", ""):
    sys.exit(f"FAIL: /validate denied for another reason: {v.get('status')}")
m = check("mutate", "plain-job.json", True)
patch = json.loads(base64.b64decode(m.get("patch", "")) or "[]")
if m.get("patchType") != "JSONPatch" or not any(op.get("path", "").startswith("/spec/affinity") for op in patch):
    sys.exit(f"FAIL: /mutate did not patch the node affinity: {patch}")
print(f"/validate denied the toleration override (protected-nodes); /mutate patched {len(patch)} operations")
PY
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
[ "$status" -eq 0 ] || { cat "$work/serve.log" >&2; fail "the webhook exited with $status after SIGTERM"; }
grep -q '"uid"' "$work/serve.log" || fail "the webhook logged no review"

step "the chart from oci://: helm show chart, helm pull, helm template with the pushed image"
helm=${HELM:-$(bash scripts/tools/helm.sh | tail -1)}
"$helm" show chart "$chart" --version "$VERSION" --plain-http > "$work/Chart.yaml"
grep -qx "version: $VERSION" "$work/Chart.yaml" && grep -Eqx "appVersion: \"?$VERSION\"?" "$work/Chart.yaml" \
  || { cat "$work/Chart.yaml" >&2; fail "helm show chart $chart: not version/appVersion $VERSION"; }
"$helm" pull "$chart" --version "$VERSION" --plain-http -d "$work" > /dev/null
cmp "$work/runner-fence-$VERSION.tgz" "$dist/runner-fence-$VERSION.tgz" || fail "the pulled chart is not the pushed one"
"$helm" template runner-fence "$chart" --version "$VERSION" --plain-http --namespace runner-fence \
  --kube-version 1.33.0 \
  --set "image.repository=$repo" --set "image.digest=$IMAGE_DIGEST" > "$work/rendered.yaml"
python3 - "$work/rendered.yaml" "$repo@$IMAGE_DIGEST" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
deploy = [d for d in docs if d.get("kind") == "Deployment"]
if len(deploy) != 1:
    sys.exit(f"FAIL: helm template rendered {len(deploy)} Deployments")
images = [c["image"] for c in deploy[0]["spec"]["template"]["spec"]["containers"]]
if images != [sys.argv[2]]:
    sys.exit(f"FAIL: the Deployment runs {images}, expected [{sys.argv[2]}]")
print(f"helm template from the registry: {len(docs)} objects, the Deployment runs {images[0]}")
PY
echo "image and chart checks passed: $repo:$VERSION@$IMAGE_DIGEST, $chart $VERSION"
