#!/usr/bin/env bash
# The CNCF distribution registry (github.com/distribution/distribution/v3) from its Go
# module, cached in ~/.cache/runner-fence (about two minutes the first time). It serves
# the loopback OCI registry of scripts/release/local-registry.sh. Prints the path of
# the registry binary on the last line.
set -euo pipefail
REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
exec bash "$(dirname "$0")/go-tool.sh" registry github.com/distribution/distribution/v3 "$REGISTRY_VERSION" \
  github.com/distribution/distribution/v3/cmd/registry \
  "-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
