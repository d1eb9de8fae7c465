#!/usr/bin/env bash
# Silo end to end in a kind cluster, for users with kind and Docker (or podman):
#   1. create a kind cluster (or reuse it),
#   2. build both images (make image) and load them into the cluster,
#   3. apply manifests/overlays/kind (Silo, and the AWS simulator in-cluster),
#   4. apply examples/ and wait until every Tenant is Ready.
#
# Usage: hack/kind-e2e.sh [--keep] [--no-build]
#   --keep      leave the cluster running (default: delete it at the end if this script made it)
#   --no-build  load the images already built instead of running `make image`
# Environment: KIND_CLUSTER (default silo-e2e), KUBECTL (default kubectl), TIMEOUT (default 300s).
#
# What runs where: this project's CI has no Docker daemon and cannot run kind, so CI checks
# this script with shellcheck, renders and server-side-dry-runs the kind overlay against a
# real API server, and runs both images (tests/tests/install.rs). This script itself is run
# by users; see docs/install.md ("Install on kind", "What was run where").
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cluster="${KIND_CLUSTER:-silo-e2e}"
kubectl="${KUBECTL:-kubectl}"
timeout="${TIMEOUT:-300s}"
tag="${SILO_IMAGE_TAG:-dev}"
keep=false
build=true
for arg in "$@"; do
  case "$arg" in
    --keep) keep=true ;;
    --no-build) build=false ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null || { echo "$1 is required: $2" >&2; exit 1; }; }
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need "$kubectl" "install kubectl, or set KUBECTL"

# kind runs on Docker, or on podman with KIND_EXPERIMENTAL_PROVIDER=podman.
if [[ "${KIND_EXPERIMENTAL_PROVIDER:-}" == podman ]] || ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
  need podman "install Docker or podman"
  export KIND_EXPERIMENTAL_PROVIDER=podman
  engine=podman
else
  engine=docker
fi
echo "kind-e2e: cluster $cluster, images built and loaded with $engine"

created=false
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 120s
  created=true
fi
cleanup() {
  if [[ "$created" == true && "$keep" == false ]]; then
    kind delete cluster --name "$cluster"
  fi
}
trap cleanup EXIT
context="kind-$cluster"
k() { "$kubectl" --context "$context" "$@"; }

if [[ "$build" == true ]]; then
  CONTAINER_ENGINE="$engine" SILO_IMAGE_TAG="$tag" make -C "$repo" image
fi

# The manifests name silo:dev and silo-awssim:dev; a node resolves those as
# docker.io/library/NAME. podman stores its builds as localhost/NAME: tag them to match.
for image in silo silo-awssim; do
  if [[ "$engine" == podman ]]; then
    podman tag "localhost/$image:$tag" "docker.io/library/$image:$tag"
    archive="$(mktemp --suffix=.tar)"
    podman save -o "$archive" "docker.io/library/$image:$tag"
    kind load image-archive "$archive" --name "$cluster"
    rm -f "$archive"
  else
    kind load docker-image "$image:$tag" --name "$cluster"
  fi
done

k apply --server-side -k "$repo/manifests/overlays/kind"
k -n silo-system rollout status deployment/silo-awssim --timeout "$timeout"
k -n silo-system rollout status deployment/silo --timeout "$timeout"

k apply --server-side -f "$repo/examples/"
mapfile -t tenants < <(k get tenants -o name)
if (( ${#tenants[@]} == 0 )); then
  echo "kind-e2e: examples/ created no Tenants" >&2
  exit 1
fi
if ! k wait --for=condition=Ready --timeout "$timeout" "${tenants[@]}"; then
  echo "kind-e2e: not every Tenant became Ready; Silo's log:" >&2
  k -n silo-system logs deployment/silo --tail 50 >&2 || true
  k get tenants -o wide >&2 || true
  exit 1
fi
k get tenants -o wide
k get baselines
echo "kind-e2e: every example Tenant is Ready"
