#!/usr/bin/env bash
# Set up, lint and type-check, then run the test suite (real data from $FEDUNL_DATA_DIR,
# real Flower simulations).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Lint first, types beside the tests (configured in pyproject.toml): a finding fails the
# command. mypy takes ~30 s of one core while the tests mostly wait on process starts.
.venv/bin/ruff check --quiet .
types_log=$(mktemp)
.venv/bin/mypy > "$types_log" 2>&1 &
types=$!
# Two workers (pytest-xdist, whole modules each, so a module's fixtures are computed
# once): much of the suite is single-threaded Python or waits on process starts and
# heartbeats, so a 2-core machine runs two modules at once. Each worker's torch then uses
# one thread unless OMP_NUM_THREADS says otherwise (two workers of two threads each on
# two cores spin against each other: 937 s against 682 s serially). FEDUNL_TEST_WORKERS=0
# runs the suite serially; tests/conftest.py orders the modules, longest first.
workers=${FEDUNL_TEST_WORKERS:-2}
[ "$workers" = 0 ] || export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 \
  -n "$workers" --dist loadfile --no-loadscope-reorder "$@" || status=$?
wait "$types" || status=1
cat "$types_log"
rm -f "$types_log"
exit "$status"
