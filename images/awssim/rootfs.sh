#!/usr/bin/env bash
# The simulator image's root filesystem, built from Debian packages with mmdebstrap (no base
# image can be pulled here): a minimal Debian with python3, and a venv in /opt/venv holding
# the simulator's pinned requirements (tests/awssim/requirements.txt and constraints.txt).
#
# Prints the path of the tarball. Cached under $SILO_CACHE/images/, keyed by this script,
# the Debian suite and the pins: rebuilt only when one of them changes.
#
# The wheels are fetched on the host by its pip, for the suite's CPython (3.11 for bookworm)
# whatever the host's Python is, then installed in the chroot with --no-index: the chroot
# needs no network or CA certificates. Every pinned package has a wheel (no sdist is built).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SILO_CACHE:-$HOME/.cache/silo}/images"
suite=bookworm
python_version=3.11
requirements="$repo/tests/awssim/requirements.txt"
constraints="$repo/tests/awssim/constraints.txt"

key="$(cat "$0" "$requirements" "$constraints" | sha256sum | cut -c1-16)"
out="$cache/awssim-rootfs-$suite-$key.tar"
if [[ -s "$out" ]]; then
  echo "simulator root filesystem: up to date in $out" >&2
  echo "$out"
  exit 0
fi

command -v mmdebstrap >/dev/null || {
  echo "mmdebstrap is missing: apt-get install -y mmdebstrap (make tools does it when root)" >&2
  exit 1
}

echo "building the simulator root filesystem (Debian $suite, python3, the pinned venv) into $out" >&2
start=$(date +%s)
mkdir -p "$cache"
work="$(mktemp -d "$cache/awssim-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels"
cp "$requirements" "$constraints" "$work/wheels/"
abi="cp${python_version/./}"
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: -d "$work/wheels" \
  --python-version "$python_version" --implementation cp --abi "$abi" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  -r "$requirements" -c "$constraints" >&2

# Documentation, manuals and locales are of no use in a container. "$1" in the hooks is the
# root directory mmdebstrap passes to each hook, hence the single quotes.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --include=python3,python3-venv \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='mkdir -p "$1/tmp/wheels"' \
  --customize-hook="copy-in $work/wheels/. /tmp/wheels" \
  --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
  --customize-hook='chroot "$1" /opt/venv/bin/pip install --quiet --no-index --disable-pip-version-check --no-compile --find-links /tmp/wheels -r /tmp/wheels/requirements.txt -c /tmp/wheels/constraints.txt' \
  --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  --customize-hook='echo "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
  "$suite" "$work/rootfs.tar" >&2
mv "$work/rootfs.tar" "$out"
# Older keys of this cache are dead weight.
find "$cache" -maxdepth 1 -name "awssim-rootfs-*.tar" ! -path "$out" -delete
echo "built $out ($(du -m "$out" | cut -f1) MB) in $(( $(date +%s) - start )) s" >&2
echo "$out"
