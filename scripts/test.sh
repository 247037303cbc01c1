#!/usr/bin/env bash
# Set up, lint and type-check, then run the test suite (real data from $FEDUNL_DATA_DIR,
# real Flower simulations).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Lint and types first (configured in pyproject.toml): a finding fails the command.
.venv/bin/ruff check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
