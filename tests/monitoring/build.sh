#!/usr/bin/env bash
# The monitoring tools the tests need, from the Go module proxy (no download site is reachable):
# - promtool, built from the github.com/prometheus/prometheus release pinned in go.mod, into
#   $SILO_CACHE/bin (default ~/.cache/silo/bin); rebuilt only when the pin changes;
# - the prometheus-operator CRDs (ServiceMonitor, PrometheusRule, ...), copied from the
#   example/prometheus-operator-crd/ directory of its Go module into
#   $SILO_CACHE/crds/prometheus-operator/ (the version is in a .version file beside them).
#
# -tags remove_all_sd leaves out the cloud service-discovery plugins (AWS, Azure, GCE SDKs...)
# that promtool never needs for `check rules` and `test rules`: a shorter cold build.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${SILO_CACHE:-$HOME/.cache/silo}"
bin="$cache/bin"

# The newest prometheus-operator release the Go module proxy serves here.
operator_version=v0.85.0

version="$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v0\./ {print $2}' "$here/go.mod")"
[[ -n "$version" ]] || { echo "no github.com/prometheus/prometheus version in $here/go.mod" >&2; exit 1; }
# Prometheus 3.x is published as the Go module version v0.3XY.Z: v0.316.0 is Prometheus 3.16.0.
minor="${version#v0.3}"; minor="${minor%%.*}"; minor="$((10#$minor))"
patch="${version##*.}"
release="3.$minor.$patch"
stamp="$bin/.promtool-version"

mkdir -p "$bin"
if [[ -x "$bin/promtool" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
  echo "promtool $release: up to date in $bin"
else
  echo "building promtool $release ($version) into $bin (a cold build takes a few minutes)"
  start=$(date +%s)
  cd "$here"
  ldflags="-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=release"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags remove_all_sd -ldflags "$ldflags" -o "$bin/promtool" \
    github.com/prometheus/prometheus/cmd/promtool
  echo "$version" > "$stamp"
  echo "built promtool $release in $(( $(date +%s) - start )) s"
fi

crds="$cache/crds/prometheus-operator"
if [[ "$(cat "$crds/.version" 2>/dev/null)" == "$operator_version" ]]; then
  echo "prometheus-operator CRDs $operator_version: up to date in $crds"
else
  echo "fetching the prometheus-operator CRDs $operator_version from its Go module"
  # From / (outside any module), so no go.mod or go.sum is touched.
  dir="$(cd / && go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$operator_version" |
    awk -F'"' '$2 == "Dir" {print $4}')"
  [[ -d "$dir/example/prometheus-operator-crd" ]] || { echo "no example/prometheus-operator-crd in $dir" >&2; exit 1; }
  rm -rf "$crds"
  mkdir -p "$crds"
  cp "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$crds/"
  chmod u+w "$crds"/*.yaml
  echo "$operator_version" > "$crds/.version"
  echo "copied $(find "$crds" -name '*.yaml' | wc -l) CRDs into $crds"
fi
