#!/usr/bin/env bash
# A loopback OCI registry (CNCF distribution, built from its Go module by
# scripts/tools/registry.sh and cached) holding runner-fence's image and chart under the same
# paths the release pipeline publishes them to (registry.gitlab.com/runner-fence/runner-fence
# and .../charts/runner-fence), for CI and the e2e suite.
#
#   local-registry.sh up          start it on a free 127.0.0.1 port (storage in a temp dir)
#   local-registry.sh push [DIST] scripts/release/push.sh (the pipeline's): DIST/oci, the
#                                 output of build-image.sh (default target/dist), with skopeo;
#                                 the chart with `helm package` + `helm push`; digests checked
#   local-registry.sh env         the references, as KEY=VALUE lines (also after push)
#   local-registry.sh down        stop it and remove its storage
#
# The references (printed by push and env):
#   RUNNER_FENCE_REGISTRY=127.0.0.1:PORT
#   RUNNER_FENCE_IMAGE=127.0.0.1:PORT/runner-fence/runner-fence:VERSION@sha256:...
#   RUNNER_FENCE_IMAGE_REPOSITORY, RUNNER_FENCE_IMAGE_TAG, RUNNER_FENCE_IMAGE_DIGEST  (chart values image.*)
#   RUNNER_FENCE_CHART=oci://127.0.0.1:PORT/runner-fence/runner-fence/charts/runner-fence
#   RUNNER_FENCE_CHART_VERSION=VERSION, RUNNER_FENCE_CHART_DIGEST=sha256:...
# The registry speaks plain HTTP on loopback: skopeo needs --tls-verify=false and helm
# --plain-http (kube-apiserver only stores the image name; no kubelet pulls it here).
# State (port, pid, storage, references) lives in $RUNNER_FENCE_REGISTRY_STATE
# (default ${TMPDIR:-/tmp}/runner-fence-registry); `up` while one runs reuses it.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=${RUNNER_FENCE_REGISTRY_STATE:-${TMPDIR:-/tmp}/runner-fence-registry}
fail() { echo "local-registry.sh: $*" >&2; exit 1; }
image_path=runner-fence/runner-fence

running() { [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }
port() { cat "$state/port"; }

up() {
  if running; then
    echo "RUNNER_FENCE_REGISTRY=127.0.0.1:$(port)"
    return
  fi
  local registry
  registry=$(bash scripts/tools/registry.sh | tail -1)
  rm -rf "$state"
  mkdir -p "$state/storage"
  local p
  p=${REGISTRY_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  cat > "$state/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $state/storage}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: 127.0.0.1:$p
  secret: $(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
YAML
  echo "$p" > "$state/port"
  setsid "$registry" serve "$state/config.yml" > "$state/registry.log" 2>&1 < /dev/null &
  echo $! > "$state/pid"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$p/v2/" 2>/dev/null; then
      echo "RUNNER_FENCE_REGISTRY=127.0.0.1:$p"
      return
    fi
    running || { cat "$state/registry.log" >&2; fail "the registry exited at start (log above)"; }
    sleep 0.1
  done
  cat "$state/registry.log" >&2
  fail "the registry did not answer on 127.0.0.1:$p/v2/ within 10 s"
}

push() {
  local dist=${1:-target/dist}
  running || fail "no registry running (local-registry.sh up first)"
  local reg="127.0.0.1:$(port)"
  # The pipeline's push script, against the loopback registry.
  PLAIN_HTTP=1 bash scripts/release/push.sh "$dist" "$reg/$image_path" > "$state/refs.new"
  { echo "RUNNER_FENCE_REGISTRY=$reg"; cat "$state/refs.new"; } > "$state/refs.env"
  rm -f "$state/refs.new"
  cat "$state/refs.env"
}

env_() {
  running || fail "no registry running (local-registry.sh up first)"
  if [ -f "$state/refs.env" ]; then cat "$state/refs.env"; else echo "RUNNER_FENCE_REGISTRY=127.0.0.1:$(port)"; fi
}

down() {
  if running; then
    local pid
    pid=$(cat "$state/pid")
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  fi
  rm -rf "$state"
}

case ${1:-} in
  up) up ;;
  push) shift; push "$@" ;;
  env) env_ ;;
  down) down ;;
  *) echo "usage: $0 up | push [DIST] | env | down" >&2; exit 2 ;;
esac
