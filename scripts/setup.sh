#!/usr/bin/env bash
# Create .venv (Python 3.11) and install exactly the versions in requirements.lock (every
# package of the venv, with hashes; regenerate it with scripts/lock.sh after changing
# pyproject.toml's dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# -qq: errors only (a machine's pip config may name index folders that do not exist, and
# pip warns about each of them on every install).
.venv/bin/python -m pip install -qq "pip==26.3"
# The lock pins the CPU build of torch (torch==2.13.0+cpu): pip finds it in a find-links
# folder or on PyTorch's CPU index (see README, "Dependencies"); an unpinned torch would
# pull a multi-GB CUDA build.
.venv/bin/python -m pip install -qq --require-hashes -r requirements.lock
.venv/bin/python -c "import flwr, torch; from fedunl_flwr.torchvision_compat import torchvision; print(f'fedunl env ready: flwr {flwr.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, cuda={torch.cuda.is_available()}')"
