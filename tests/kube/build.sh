#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the k8s.io/kubernetes release pinned in go.mod, into
# $SILO_CACHE/bin (default ~/.cache/silo/bin). Rebuilds only when the pinned version changes.
#
# CGO_ENABLED=0: static binaries, no C toolchain needed.
# GOEXPERIMENT=nojsonv2: with Go 1.27 or newer the default JSON v2 experiment silently breaks
# /openapi/v2 and `kubectl apply`; harmless on older Go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${SILO_CACHE:-$HOME/.cache/silo}"
bin="$cache/bin"
version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2}' "$here/go.mod")"
[[ -n "$version" ]] || { echo "no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
stamp="$bin/.kube-version"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kubectl" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
  echo "kube-apiserver and kubectl $version: up to date in $bin"
  exit 0
fi

major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "building kube-apiserver and kubectl $version into $bin (a cold build takes about 10 minutes)"
mkdir -p "$bin"
cd "$here"
start=$(date +%s)
CGO_ENABLED=0 GOEXPERIMENT=nojsonv2 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
echo "$version" > "$stamp"
echo "built $("$bin/kube-apiserver" --version) in $(( $(date +%s) - start )) s"
