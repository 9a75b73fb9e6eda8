#!/usr/bin/env bash
# Builds kube-apiserver, kube-scheduler and kube-controller-manager from the
# k8s.io/kubernetes Go module into a cache outside the checkout, keyed by version,
# so only the first run on a machine pays for it (15-30 minutes on 2 cores).
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging
# modules (k8s.io/api, k8s.io/apiserver, ...) with ./staging paths. A small wrapper
# module requires it and replaces each of those with the published v0.MINOR.PATCH.
#
# Prints the binary directory on the last line of stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
bin="$CACHE/k8s/$K8S_VERSION/bin"
components=(kube-apiserver kube-scheduler kube-controller-manager)

have_all() { for c in "${components[@]}"; do [ -x "$bin/$c" ] || return 1; done; }
if have_all; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "scripts/cluster/build.sh: go is required to build Kubernetes" >&2; exit 1; }
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}
staging="v0.$minor.$patch"

work="$CACHE/k8s/$K8S_VERSION/src"
mkdir -p "$work" "$bin"
cd "$work"
echo "== building Kubernetes $K8S_VERSION components in $work (staging modules at $staging)" >&2

export GOFLAGS=-mod=mod
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')

{
  echo "module runner-fence.dev/k8s-build"
  echo
  grep -E '^go [0-9]' "$gomod" | head -1
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  # Every `k8s.io/x => ./staging/src/k8s.io/x` replace becomes the published module.
  grep -E '^\s*k8s.io/[^ ]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
} > go.mod

cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
go mod tidy -e >&2 || true
# tidy drops requirements only a build-tagged file needs; resolve them for the build.
go get "k8s.io/kubernetes@$K8S_VERSION" >&2

pkg=k8s.io/component-base/version
cgo=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $pkg $cgo; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for c in "${components[@]}"; do
  echo "== go build $c" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c" >&2
  mv "$bin/$c.tmp" "$bin/$c"
done
have_all
"$bin/kube-apiserver" --version >&2
echo "$bin"
