#!/usr/bin/env bash
# Creates (or reuses) the venv of vLLM's TPU stack on the JAX CPU backend (vllm-tpu +
# tpu-inference, Python 3.12) and installs this checkout into it. Cached outside the
# checkout (~10 GB, several minutes once). The last line printed is the venv's path.
#
#   scripts/setup-tpu-inference.sh
#   RTP_TPU_INFERENCE_VENV=/path scripts/setup-tpu-inference.sh   # default ~/.cache/ray-tpu-profile/venv-tpu-inference
#   RTP_PYTHON312=/path/to/python3.12 scripts/setup-tpu-inference.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RTP_TPU_INFERENCE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ray-tpu-profile/venv-tpu-inference}"
requirements=requirements/tpu-inference-cpu.txt
# Every package pinned (a pip freeze of a venv built from $requirements): installed without
# pip's resolver, and unchanged by later releases.
lock=requirements/tpu-inference-cpu.lock
stamp="$venv/.ray-tpu-profile-setup"
want="$(cat "$requirements" "$lock" "$0" | sha256sum | cut -c1-16)"

find_python() {
  local candidate
  for candidate in "${RTP_PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    python="$(find_python)" || {
      echo "setup-tpu-inference: no Python 3.12 found (tried RTP_PYTHON312, python3.12 on PATH, ~/.pyenv/versions/3.12*): jax 0.11 needs it" >&2
      exit 1
    }
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q --no-deps -r "$lock"
  echo "$want" > "$stamp"
fi
# This checkout, whichever it is (CI clones afresh): no deps, seconds.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || "$venv/bin/python" -m pip install -q --no-deps -e .
# The CPU adaptations of tpu-inference (ray_tpu_profile/sim_platform/tpu_inference_cpu.py)
# in every process of this venv, vLLM's engine core and Ray's workers too: a .pth line runs
# at interpreter start. install() does nothing outside a simulated TPU host. Named to sort
# after __editable__.*.pth, which makes ray_tpu_profile importable.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import ray_tpu_profile.sim_platform.tpu_inference_cpu as m; m.install()" \
  > "$site/ray_tpu_profile_tpu_inference_cpu.pth"
echo "$venv"
