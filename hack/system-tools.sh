#!/usr/bin/env bash
# The Debian packages `make test` needs beyond the toolchains the machine comes with:
#   - podman and runc: build and run the images (make image, tests/tests/install.rs);
#   - mmdebstrap: builds the simulator image's Debian root filesystem;
#   - the shell linter "shellcheck": lints the shell scripts (make lint).
# Installs whatever is missing when running as root on Debian (CI runs as root on a fresh
# machine); otherwise says what to install and fails.
#
# podman on these machines: its default crun is absent and the sandbox refuses the default
# ulimits, so runc is used and default_ulimits emptied in a containers.conf drop-in.
set -euo pipefail

missing=()
for pair in podman:podman runc:runc mmdebstrap:mmdebstrap shellcheck:shellcheck; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if (( ${#missing[@]} > 0 )); then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "missing: ${missing[*]}; install them (on Debian: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "installing ${missing[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

dropin=/etc/containers/containers.conf.d/50-silo.conf
if [[ "$(id -u)" == 0 && ! -f "$dropin" ]]; then
  mkdir -p "$(dirname "$dropin")"
  cat > "$dropin" <<'CONF'
# Written by Silo's hack/system-tools.sh: the sandbox refuses podman's default ulimits.
[containers]
default_ulimits = []
CONF
  echo "wrote $dropin"
fi
echo "podman $(podman --version | awk '{print $3}'), runc, mmdebstrap, shellcheck: present"
