#!/usr/bin/env bash
# Creates (or reuses) the project's venv with the CPU stack and this package.
# Idempotent: a second run with unchanged requirements only re-links the package.
#
#   scripts/setup.sh                       # venv at ./.venv
#   RTP_VENV=/path/venv scripts/setup.sh   # elsewhere
#   RTP_TORCH_INDEX_URL=URL scripts/setup.sh   # PyTorch CPU wheel index (default below)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RTP_VENV:-.venv}"
torch_index="${RTP_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
python="${RTP_PYTHON:-python3}"
requirements=requirements/cpu.txt
# Every package pinned (scripts/lock.sh makes it from cpu.txt): installed without pip's
# resolver, which took 2 of the 5 minutes of a clean set-up.
lock=requirements/cpu.lock
stamp="$venv/.ray-tpu-profile-setup"
want="$(cat "$requirements" "$lock" "$0" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null
  echo "setup: $venv is up to date"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip

# torch 2.13.0+cpu: from a local wheel folder (PIP_FIND_LINKS) if one holds it, else from
# the PyTorch CPU index, probed first so an unreachable index fails fast, not after retries.
extra=()
local_wheel=""
for dir in ${PIP_FIND_LINKS:-}; do
  compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null && local_wheel="$dir"
done
if [[ -z "$local_wheel" ]]; then
  if "$venv/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" "$torch_index" 2>/dev/null; then
    extra=(--extra-index-url "$torch_index")
  else
    echo "setup: no torch 2.13.0+cpu wheel in PIP_FIND_LINKS and the PyTorch CPU index $torch_index is unreachable;" >&2
    echo "setup: set RTP_TORCH_INDEX_URL to a reachable mirror or PIP_FIND_LINKS to a folder with the wheel" >&2
    exit 1
  fi
fi

"${pip[@]}" install -q --no-deps "${extra[@]}" -r "$lock"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU.
"${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "setup: $venv ready"
