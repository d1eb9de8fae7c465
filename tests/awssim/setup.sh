#!/usr/bin/env bash
# Creates the AWS simulator's venv ($SILO_VENV, default ~/.cache/silo/venv) with moto and the
# test tools pinned in requirements.txt and constraints.txt. Reinstalls only when those change.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${SILO_VENV:-${SILO_CACHE:-$HOME/.cache/silo}/venv}"
want="$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-16)"
stamp="$venv/.silo-requirements"

if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
  echo "simulator venv: up to date in $venv"
  exit 0
fi
echo "creating the simulator venv in $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" -c "$here/constraints.txt"
echo "$want" > "$stamp"
