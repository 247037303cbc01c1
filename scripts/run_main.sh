#!/usr/bin/env bash
# Set up, then run the default fedunl job: a `flwr run` simulation of the offline
# digits scenario (MNIST / UCI digits / USPS, 9 clients) with per-round progress and a
# per-client per-class accuracy table at the end. Extra arguments go to flwr_run.py,
# e.g. -c "num-server-rounds=10".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FEDUNL_RESULTS_DIR=${FEDUNL_RESULTS_DIR:-$PWD/results}
exec .venv/bin/python scripts/flwr_run.py "$@"
