#!/usr/bin/env bash
# Builds Helm from the helm.sh/helm/v3 Go module into a cache outside the checkout,
# keyed by version, so only the first run on a machine pays for it (a few minutes).
# `go install helm.sh/helm/v3/cmd/helm@v` refuses because Helm's go.mod has replace
# directives; a small wrapper module that requires Helm builds the same command.
#
# Prints the path of the helm binary on the last line of stdout.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
bin="$CACHE/helm/$HELM_VERSION/bin"
if [ -x "$bin/helm" ]; then
  echo "$bin/helm"
  exit 0
fi
command -v go >/dev/null || { echo "scripts/tools/helm.sh: go is required to build Helm" >&2; exit 1; }

work="$CACHE/helm/$HELM_VERSION/src"
mkdir -p "$work" "$bin"
cd "$work"
echo "== building Helm $HELM_VERSION in $work" >&2
export GOFLAGS=-mod=mod
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module runner-fence.dev/helm-build"
  echo
  grep -E '^go [0-9]' "$gomod" | head -1
  echo
  echo "require helm.sh/helm/v3 $HELM_VERSION"
  echo
  # Helm's own replace directives, kept as they are (they point at published modules).
  awk '/^replace \(/{inblock=1; next} inblock && /^\)/{inblock=0; next} inblock{print "replace " $0; next} /^replace /{print}' "$gomod" | grep -v '=> \.' || true
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
go mod tidy -e >&2 || true
go get "helm.sh/helm/v3@$HELM_VERSION" >&2
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm >&2
mv "$bin/helm.tmp" "$bin/helm"
"$bin/helm" version >&2
echo "$bin/helm"
