#!/usr/bin/env bash
# Sets up the venv (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${RTP_VENV:-.venv}/bin/python" -m pytest "$@"
