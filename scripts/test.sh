#!/usr/bin/env bash
# Set up, then run the test suite (real data from $FEDUNL_DATA_DIR, real Flower/Ray runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
