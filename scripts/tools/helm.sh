#!/usr/bin/env bash
# Helm from the helm.sh/helm/v3 Go module, cached in ~/.cache/runner-fence (a few
# minutes the first time). Prints the path of the helm binary on the last line.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.21.4}
exec bash "$(dirname "$0")/go-tool.sh" helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
