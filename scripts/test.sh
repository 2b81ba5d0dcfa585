#!/usr/bin/env bash
# Sets up the venv (scripts/setup.sh) and runs every check, fastest first, stopping at the
# first that fails: lint and format (ruff), layer contracts (import-linter), types (mypy),
# the unit tests (no cluster, seconds), then the end-to-end tests (real Ray, vLLM and
# profilers on simulated hosts, minutes). Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin="${RTP_VENV:-.venv}/bin"
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/lint-imports" --no-cache
"$bin/mypy"
"$bin/python" -m pytest tests/unit "$@"
"$bin/python" -m pytest tests/e2e "$@"
