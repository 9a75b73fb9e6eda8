#!/usr/bin/env bash
# Builds a Go command from the Go module proxy into a cache outside the checkout,
# keyed by version, so only the first run on a machine pays for it. Used by
# helm.sh and helmfile.sh.
#
#   go-tool.sh NAME MODULE VERSION PACKAGE [LDFLAGS...]
#
# `go install MODULE/cmd@VERSION` refuses modules whose go.mod has replace
# directives (Helm's, helmfile's); a small wrapper module that requires MODULE and
# copies its replace directives that point at published modules builds the same
# command. Prints the path of the binary on the last line of stdout.
set -euo pipefail

name=$1 module=$2 version=$3 package=$4
shift 4
CACHE=${RUNNER_FENCE_CACHE:-$HOME/.cache/runner-fence}
bin="$CACHE/$name/$version/bin"
if [ -x "$bin/$name" ]; then
  echo "$bin/$name"
  exit 0
fi
command -v go >/dev/null || { echo "scripts/tools/go-tool.sh: go is required to build $name" >&2; exit 1; }

work="$CACHE/$name/$version/src"
mkdir -p "$work" "$bin"
cd "$work"
echo "== building $name $version in $work" >&2
export GOFLAGS=-mod=mod
gomod=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo "module runner-fence.dev/$name-build"
  echo
  grep -E '^go [0-9]' "$gomod" | head -1
  echo
  echo "require $module $version"
  echo
  # The module's own replace directives, single and in blocks, except local paths.
  awk '/^replace \(/{inblock=1; next} inblock && /^\)/{inblock=0; next} inblock && !/^[[:space:]]*\/\//{print "replace " $0; next} /^replace [^(]/{print}' "$gomod" | grep -v '=> \.' | grep -E '=>' || true
} > go.mod
cat > tools.go <<GO
//go:build tools

package tools

import _ "$package"
GO
go mod tidy -e >&2 || true
go get "$module@$version" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $*" -o "$bin/$name.tmp" "$package" >&2
mv "$bin/$name.tmp" "$bin/$name"
echo "$bin/$name"
