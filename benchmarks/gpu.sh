#!/usr/bin/env bash
# One prepared GPU check for a lent machine: installs nothing from the network.
# Expects the repository's virtual environment (or an environment with torch + segment-anything).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -m pytest -q tests/test_parity.py -k "tiny" -x 2>&1 | tail -2
python benchmarks/bench_gpu.py --configs vit_b vit_h --batches 1 8 --runs 10
