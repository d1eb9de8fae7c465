#!/usr/bin/env bash
# `make image`: builds Silo's two images offline, with podman or docker, whichever is present
# (CONTAINER_ENGINE=podman|docker picks one):
#
#   silo:$TAG         the controller: FROM scratch, the silo binary (cargo profile "image"),
#                     the shared libraries `ldd` lists for it, Debian's CA certificates, user 65532
#   silo-awssim:$TAG  the AWS simulator, on a Debian root filesystem made by awssim/rootfs.sh
#
# TAG is $SILO_IMAGE_TAG, default "dev". Prints the size of each image at the end.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${SILO_CACHE:-$HOME/.cache/silo}"
target="${CARGO_TARGET_DIR:-$repo/target}"
tag="${SILO_IMAGE_TAG:-dev}"
cargo="${CARGO:-cargo}"

engine="${CONTAINER_ENGINE:-}"
if [[ -z "$engine" ]]; then
  if command -v podman >/dev/null; then
    engine=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  else
    echo "no container engine: install podman (apt-get install -y podman runc; make tools does it when root) or start Docker" >&2
    exit 1
  fi
fi
build=("$engine" build)
# On these Debian machines podman works with runc; a Containerfile without RUN needs no
# runtime at all, but say so explicitly so a missing crun is never the problem.
[[ "$engine" == podman ]] && build+=(--runtime runc)

revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
version="$(awk -F'"' '/^version/ {print $2; exit}' "$repo/controller/Cargo.toml")"
labels=(--label "org.opencontainers.image.revision=$revision" --label "org.opencontainers.image.version=$version")

# --- the controller -------------------------------------------------------------------
start=$(date +%s)
"$cargo" build --locked --profile image -p silo --bin silo
bin="$target/image/silo"
stage="$cache/images/controller"
rm -rf "$stage"
mkdir -p "$stage/rootfs/etc/ssl/certs"
cp "$bin" "$stage/rootfs/silo"

# Exactly what the loader needs: every library ldd resolves, and the loader itself, each at
# the path ldd names (the binary's interpreter path and the default library directories).
libs=()
while read -r path; do
  [[ -n "$path" ]] || continue
  libs+=("$path")
  mkdir -p "$stage/rootfs$(dirname "$path")"
  cp -L "$path" "$stage/rootfs$path"
done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
echo "silo links: ${libs[*]}"

# Debian's CA certificates: the ca-certificates package's bundle as update-ca-certificates
# makes it from /etc/ca-certificates.conf, without any local additions this machine has in
# /usr/local/share/ca-certificates (a build host's private CA must never ship in an image).
: > "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
count=0
while read -r entry; do
  [[ -z "$entry" || "$entry" == \#* || "$entry" == \!* ]] && continue
  cert="/usr/share/ca-certificates/$entry"
  [[ -f "$cert" ]] || continue
  cat "$cert" >> "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
  count=$((count + 1))
done < /etc/ca-certificates.conf
(( count > 100 )) || { echo "only $count CA certificates found in /usr/share/ca-certificates: install ca-certificates" >&2; exit 1; }
echo "nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin" > "$stage/rootfs/etc/passwd"
echo "nonroot:x:65532:" > "$stage/rootfs/etc/group"
cp "$here/controller/Containerfile" "$stage/Containerfile"
"${build[@]}" "${labels[@]}" -t "silo:$tag" -f "$stage/Containerfile" "$stage"
echo "silo:$tag built in $(( $(date +%s) - start )) s (binary and image; $count CA certificates)"

# --- the simulator --------------------------------------------------------------------
start=$(date +%s)
rootfs="$("$here/awssim/rootfs.sh")"
stage="$cache/images/awssim"
rm -rf "$stage"
mkdir -p "$stage"
ln "$rootfs" "$stage/rootfs.tar" 2>/dev/null || cp "$rootfs" "$stage/rootfs.tar"
cp "$repo/tests/awssim/silo_awssim.py" "$here/awssim/entrypoint.py" "$here/awssim/Containerfile" "$stage/"
"${build[@]}" "${labels[@]}" -t "silo-awssim:$tag" -f "$stage/Containerfile" "$stage"
echo "silo-awssim:$tag built in $(( $(date +%s) - start )) s"

"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "(^|/)silo(-awssim)?:$tag " || true
