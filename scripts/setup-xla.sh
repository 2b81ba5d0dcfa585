#!/usr/bin/env bash
# Creates (or reuses) the torch_xla CPU venv used by tests/e2e/test_xla_backend.py and
# installs this checkout into it. Cached outside the checkout (~4 GB download once).
#
#   RTP_XLA_VENV=/path scripts/setup-xla.sh    # default ~/.cache/ray-tpu-profile/venv-xla
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RTP_XLA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ray-tpu-profile/venv-xla}"
requirements=requirements/xla-cpu.txt
stamp="$venv/.ray-tpu-profile-setup"
want="$(cat "$requirements" | sha256sum | cut -c1-16)"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r "$requirements"
  echo "$want" > "$stamp"
fi
# This checkout, whichever it is (CI clones afresh): no deps, seconds.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || "$venv/bin/python" -m pip install -q --no-deps -e .
echo "$venv"
