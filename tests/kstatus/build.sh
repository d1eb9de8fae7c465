#!/usr/bin/env bash
# Builds silo-kstatus (main.go: what Flux's kstatus makes of an object) into $SILO_CACHE/bin
# (default ~/.cache/silo/bin). Rebuilt only when go.mod, go.sum or main.go change.
#
# Same flags as tests/kube/build.sh, so the apimachinery packages it shares with
# kube-apiserver come from the Go build cache.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${SILO_CACHE:-$HOME/.cache/silo}/bin"
want="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
stamp="$bin/.silo-kstatus-version"

if [[ -x "$bin/silo-kstatus" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
  echo "silo-kstatus: up to date in $bin"
  exit 0
fi
echo "building silo-kstatus (sigs.k8s.io/cli-utils kstatus) into $bin"
mkdir -p "$bin"
start=$(date +%s)
cd "$here"
CGO_ENABLED=0 GOEXPERIMENT=nojsonv2 GOFLAGS=-mod=mod go build -trimpath -o "$bin/silo-kstatus" .
echo "$want" > "$stamp"
echo "built silo-kstatus in $(( $(date +%s) - start )) s"
