#!/usr/bin/env bash
# Builds helmfile from the github.com/helmfile/helmfile Go module into a cache outside
# the checkout, keyed by version, so only the first run on a machine pays for it.
# `go install github.com/helmfile/helmfile@v` refuses because helmfile's go.mod has
# replace directives; a small wrapper module that requires helmfile (with those
# replace directives copied) builds the same command, as scripts/tools/helm.sh does.
#
# Prints the path of the helmfile binary on the last line of stdout.
set -euo pipefail

HELMFILE_VERSION=${HELMFILE_VERSION:-v1.8.0}
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
bin="$CACHE/helmfile/$HELMFILE_VERSION/bin"
if [ -x "$bin/helmfile" ]; then
  echo "$bin/helmfile"
  exit 0
fi
command -v go >/dev/null || { echo "scripts/tools/helmfile.sh: go is required to build helmfile" >&2; exit 1; }

work="$CACHE/helmfile/$HELMFILE_VERSION/src"
mkdir -p "$work" "$bin"
cd "$work"
echo "== building helmfile $HELMFILE_VERSION in $work" >&2
export GOFLAGS=-mod=mod
gomod=$(go mod download -json "github.com/helmfile/helmfile@$HELMFILE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module runner-fence.dev/helmfile-build"
  echo
  grep -E '^go [0-9]' "$gomod" | head -1
  echo
  echo "require github.com/helmfile/helmfile $HELMFILE_VERSION"
  echo
  # helmfile's own replace directives, kept as they are (they point at published modules).
  awk '/^replace \(/{inblock=1; next} inblock && /^\)/{inblock=0; next} inblock && !/^[[:space:]]*\/\//{print "replace " $0; next} /^replace [^(]/{print}' "$gomod" | grep -v '=> \.' | grep -E '=>' || true
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/helmfile/helmfile"
GO
go mod tidy -e >&2 || true
go get "github.com/helmfile/helmfile@$HELMFILE_VERSION" >&2
ldflags="-s -w -X go.szostok.io/version.version=$HELMFILE_VERSION -X go.szostok.io/version.dirtyBuild=false"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/helmfile.tmp" github.com/helmfile/helmfile >&2
mv "$bin/helmfile.tmp" "$bin/helmfile"
HELMFILE_UPGRADE_NOTICE_DISABLED=1 "$bin/helmfile" version -o short >&2 || true
echo "$bin/helmfile"
