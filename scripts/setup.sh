#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with otx-nld installed.
# Usage: bash scripts/setup.sh [extra]     e.g. `bash scripts/setup.sh dev` for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
extra=${1:-}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
# Skip pip when this exact install is already there (pip's resolver alone takes ~20 s).
stamp=".venv/.otx-nld-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extra:-base}"
if [ ! -f "$stamp" ]; then
    echo "installing otx-nld${extra:+[$extra]} and its dependencies into .venv (first time: a few minutes)"
    .venv/bin/python -m pip install --disable-pip-version-check -q -e "$spec" 2>&1 | grep -v "is ignored: it is neither" || true
    .venv/bin/python -c "import otx_nld, torch, torchvision, openvino" # fails loudly if the install did
    touch "$stamp"
fi
