#!/usr/bin/env bash
# helmfile from the github.com/helmfile/helmfile Go module, cached in
# ~/.cache/runner-fence (about 15 minutes the first time on 2 cores). Prints the
# path of the helmfile binary on the last line.
set -euo pipefail
HELMFILE_VERSION=${HELMFILE_VERSION:-v1.8.0}
exec bash "$(dirname "$0")/go-tool.sh" helmfile github.com/helmfile/helmfile "$HELMFILE_VERSION" github.com/helmfile/helmfile \
  "-X go.szostok.io/version.version=$HELMFILE_VERSION" "-X go.szostok.io/version.dirtyBuild=false"
