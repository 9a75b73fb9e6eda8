#!/usr/bin/env bash
# Pushes what scripts/release/build-image.sh built: the OCI layout (every platform, digests
# preserved) with skopeo to IMAGE_REPO:VERSION, and the chart (`helm package`) with `helm push`
# to oci://IMAGE_REPO/charts; then checks that the registry serves the built digest.
# The release pipeline's publish job runs it against the project's registry, and
# scripts/release/local-registry.sh against the loopback one.
#
#   push.sh DIST IMAGE_REPO      e.g. push.sh target/dist registry.gitlab.com/runner-fence/runner-fence
#
# PLAIN_HTTP=1: a registry without TLS (loopback only). Credentials: skopeo's and helm's own
# logins (the pipeline logs both in with the job token first). HELM: the helm binary (default
# scripts/tools/helm.sh, built from its Go module and cached).
# Prints the references as KEY=VALUE lines (RUNNER_FENCE_IMAGE..., RUNNER_FENCE_CHART...).
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "push.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || { echo "usage: $0 DIST IMAGE_REPO" >&2; exit 2; }
dist=$1 repo=$2
[ -f "$dist/image.env" ] && [ -f "$dist/oci/index.json" ] \
  || fail "$dist has no image (run scripts/release/build-image.sh first)"
version=$(sed -n 's/^VERSION=//p' "$dist/image.env")
digest=$(sed -n 's/^IMAGE_DIGEST=//p' "$dist/image.env")
[ -n "$version" ] && [ -n "$digest" ] || fail "$dist/image.env lacks VERSION or IMAGE_DIGEST"
command -v skopeo >/dev/null || fail "skopeo is missing (apt-get install skopeo)"
tls=(--dest-tls-verify=true) inspect_tls=(--tls-verify=true) helm_http=()
policy=()
if [ "${PLAIN_HTTP:-0}" = 1 ]; then
  tls=(--dest-tls-verify=false) inspect_tls=(--tls-verify=false) helm_http=(--plain-http)
  # Our own layout into our own loopback registry: no signature policy to apply.
  policy=(--insecure-policy)
elif [ ! -f /etc/containers/policy.json ]; then
  fail "/etc/containers/policy.json is missing (Debian's skopeo brings it with containers-common)"
fi

echo "== skopeo copy --all oci:$dist/oci:$version docker://$repo:$version" >&2
skopeo "${policy[@]}" copy --quiet --all --preserve-digests "${tls[@]}" \
  "oci:$dist/oci:$version" "docker://$repo:$version" >&2
got="sha256:$(skopeo inspect --raw "${inspect_tls[@]}" "docker://$repo:$version" | sha256sum | cut -d' ' -f1)"
[ "$got" = "$digest" ] || fail "the registry serves $repo:$version as $got, but $digest was built"

helm=${HELM:-$(bash scripts/tools/helm.sh | tail -1)}
chart_version=$(sed -n 's/^version: *//p' charts/runner-fence/Chart.yaml)
[ "$chart_version" = "$version" ] || fail "charts/runner-fence/Chart.yaml has version $chart_version, the image $version"
echo "== helm package charts/runner-fence; helm push oci://$repo/charts" >&2
"$helm" package charts/runner-fence -d "$dist" >&2
"$helm" push "$dist/runner-fence-$version.tgz" "oci://$repo/charts" "${helm_http[@]}" > "$dist/helm-push.log" 2>&1 \
  || { cat "$dist/helm-push.log" >&2; fail "helm push failed"; }
chart_digest=$(sed -n 's/^Digest: *//p' "$dist/helm-push.log")
[ -n "$chart_digest" ] || { cat "$dist/helm-push.log" >&2; fail "helm push printed no digest"; }

echo "RUNNER_FENCE_IMAGE=$repo:$version@$digest"
echo "RUNNER_FENCE_IMAGE_REPOSITORY=$repo"
echo "RUNNER_FENCE_IMAGE_TAG=$version"
echo "RUNNER_FENCE_IMAGE_DIGEST=$digest"
echo "RUNNER_FENCE_CHART=oci://$repo/charts/runner-fence"
echo "RUNNER_FENCE_CHART_VERSION=$version"
echo "RUNNER_FENCE_CHART_DIGEST=$chart_digest"
