#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: every package of the venv (runtime and
# dev extra), pinned with hashes. Run after changing a dependency, then commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install -qq "pip==26.3" "pip-tools==7.7.0"
# --allow-unsafe pins setuptools too; no find-links or index lines are written, so the
# lock names no machine's folders (torch's CPU build must be findable where it installs).
"$tools/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --extra dev \
  --no-emit-find-links --no-emit-index-url -o requirements.lock pyproject.toml
echo "requirements.lock written: $(grep -c '==' requirements.lock) pinned packages"
