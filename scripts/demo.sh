#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the tutorial end to end.
# Extra arguments go to `otx-nld demo` (default output: outputs/demo, replaced if present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/otx-nld demo -o outputs/demo --overwrite "$@"
