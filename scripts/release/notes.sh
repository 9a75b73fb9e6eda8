#!/bin/sh
# Release notes of VERSION: its section of CHANGELOG.md (Keep a Changelog), without the
# heading, as the release pipeline publishes them. Fails when the section is missing or empty.
#
#   notes.sh VERSION [CHANGELOG]
set -eu
[ $# -ge 1 ] || { echo "usage: $0 VERSION [CHANGELOG]" >&2; exit 2; }
version=$1
changelog=${2:-$(dirname "$0")/../../CHANGELOG.md}
[ -f "$changelog" ] || { echo "notes.sh: $changelog: no such file" >&2; exit 1; }
notes=$(awk -v v="$version" '
  index($0, "## [" v "]") == 1 { found = 1; next }
  found && /^## \[/ { exit }
  found && /^\[[^]]+\]: / { exit }
  found { print }
' "$changelog" | sed -e '/./,$!d')
if [ -z "$(printf '%s' "$notes" | tr -d '[:space:]')" ]; then
  echo "notes.sh: $changelog has no section '## [$version]' with content" >&2
  exit 1
fi
printf '%s\n' "$notes"
