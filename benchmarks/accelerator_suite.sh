#!/usr/bin/env bash
# The accelerator suite (benchmarks/accelerator_suite.py): prints one JSON to stdout.
#   bash benchmarks/accelerator_suite.sh               # GPU/TPU machine, < 8 minutes
#   bash benchmarks/accelerator_suite.sh --cpu_smoke   # tiny sizes on CPU (CI)
# Needs only jax, flax, optax, numpy; PYTHON selects the interpreter (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" -m benchmarks.accelerator_suite "$@"
