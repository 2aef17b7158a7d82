#!/usr/bin/env bash
# Builds the benchmark's TLS load generator (stdlib Go only) into the binary cache.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin_dir=${OCSP_STAPLER_BIN_DIR:-$here/../.cache/bin}
mkdir -p "$bin_dir"
cd "$here/tlsload"
GOTOOLCHAIN=local go build -trimpath -o "$bin_dir/tlsload" .
