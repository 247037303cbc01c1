#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned dependencies from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python - <<'PY' > .venv/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["dev"]))
PY
.venv/bin/python -m pip install -q -r .venv/requirements.txt
.venv/bin/python -c "import flwr, torch; from fedunl_flwr.torchvision_compat import torchvision; print(f'fedunl env ready: flwr {flwr.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, cuda={torch.cuda.is_available()}')"
