#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo on its built-in real case.
# Extra arguments go to `aspire-jax demo`, e.g. `bash scripts/demo.sh --case eight_schools`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[plot,progress]'
exec .venv/bin/aspire-jax demo "$@"
