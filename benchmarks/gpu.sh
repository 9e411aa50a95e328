#!/usr/bin/env bash
# One prepared check for a lent GPU machine; installs nothing from the network.
#
# Needs python3 with CUDA torch, numpy, pillow, pytest, hypothesis and scikit-image. Missing
# packages are installed offline from wheels in .whl/ (fetch them where pip works, for the GPU
# machine's Python: pip download --no-deps segment-anything==1.0 -d .whl, and pycocotools, which
# tests/test_everything.py needs, as a manylinux wheel for that Python). samkit is installed
# from this checkout (editable, no dependencies, offline).
#
#   bash benchmarks/gpu.sh [OUTDIR]            # tests on the card + bench_gpu.py (about 5 min)
#   TRAIN_STEPS=3000 bash benchmarks/gpu.sh    # also trains the tiny model's recipe on the GPU
#   BENCH_ARGS="--configs vit_b --compile-configs" bash benchmarks/gpu.sh   # a shorter benchmark
#
# OUTDIR (default $OUT, else /tmp/samkit-gpu) receives the logs and any trained model.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/samkit-gpu}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/samkit-site .whl/*.whl \
    || echo "warning: the wheels in .whl/ did not install; continuing with what is there"
  export PYTHONPATH=/tmp/samkit-site
fi
# samkit.adapters / samkit.pipelines live in top-level folders: install this checkout (offline).
if ! $PY -c "import samkit.pipelines" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== tests on the card: CUDA vs CPU segment everything, tiny parity"
timeout "${TEST_TIMEOUT:-120}" $PY -m pytest -q -p no:cacheprovider \
  tests/test_everything.py tests/test_parity.py -k "cuda_matches_cpu or tiny" 2>&1 \
  | tee "$OUT_DIR/tests.txt" | tail -4

echo "== encoder and decoder speed against segment_anything"
timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/bench_gpu.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT_DIR/bench_gpu.txt"

if [ "${TRAIN_STEPS:-0}" -gt 0 ]; then
  echo "== tiny model recipe on the GPU: ${TRAIN_STEPS} steps x ${TRAIN_IMAGES:-64} images"
  timeout "${TRAIN_TIMEOUT:-300}" $PY scripts/train_tiny.py --device cuda --no-progress --threads 8 --workers 14 \
    --steps "$TRAIN_STEPS" --images-per-step "${TRAIN_IMAGES:-64}" --train-scenes "${TRAIN_SCENES:-32000}" \
    --out "$OUT_DIR/tiny_gpu.pth" --note "GPU run by benchmarks/gpu.sh" 2>&1 | tee "$OUT_DIR/train.txt" | tail -30
fi
