#!/usr/bin/env bash
# The test suite on a fresh machine: set up .venv with the dev extra, then run pytest.
# Tests that check interoperability with the real Datumaro 1.11.1 use their own venv,
# .venv-datumaro (it pins old numpy/PyYAML), created here on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m tests.datumaro_env
exec .venv/bin/python -m pytest "$@"
