#!/usr/bin/env bash
# Regenerates tests/data: two small, real run directories of the embedded default (a local
# Ray cluster of 2 simulated TPU hosts, the tiny random-weight model), one captured with the
# torch backend and one with jax. The unit tests of report, diff, timeline and plot read
# them instead of building partial manifests; the derived outputs (report.*, timeline, png)
# are left out, since those tests derive them again.
#
#   scripts/make-test-data.sh      # about 3 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
cli=("${RTP_VENV:-.venv}/bin/python" -m ray_tpu_profile run --quiet)
# 6 kept warmups + 2 profiled = 8 iterations a side: enough for diff's verdict to decide.
workload=(--input-len 16 --output-len 8 --batch-size 4 --num-iters-warmup 7 --num-iters 2)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"${cli[@]}" --profiler torch --profile-result-dir "$scratch/torch" "${workload[@]}"
"${cli[@]}" --profiler jax --duration-ms 1500 --profile-result-dir "$scratch/jax" "${workload[@]}"
mkdir -p tests/data
for kind in torch jax; do
  run=("$scratch/$kind"/*)
  dest="tests/data/$kind-2hosts"
  rm -rf "$dest"
  mv "${run[0]}" "$dest"
  rm -f "$dest"/report.json "$dest"/report.txt "$dest"/report.png "$dest"/timeline.json.gz
  # XProf's conversion caches written beside the xplanes are not part of a run.
  find "$dest" -name '*.xplane.pb.*' -delete
  du -sh "$dest"
done
