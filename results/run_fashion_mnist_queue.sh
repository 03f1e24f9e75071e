#!/usr/bin/env bash
# Every Fashion-MNIST model of results/fashion_mnist.md, as listed in results/fashion_mnist_plan.json, on one
# CUDA GPU. Resumable: run it again after an interruption (finished runs are skipped, the others continue from
# their last epoch). JOBS runs share the GPU; where NVIDIA MPS is installed it is started here, so that the
# runs' small kernels execute side by side. Extra arguments go to 'mpcvit train-queue'
# (e.g. --stop-after-minutes 8, --only NAME ...).
# The published run: JOBS=12 with MPS on one H200; the seed-2 students and the MPCViT mu=0.3 / MPCViT+
# seeds 1-2 were a second invocation with --only (the first stopped them at its time limit).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
JOBS=${JOBS:-12}
if command -v nvidia-cuda-mps-control >/dev/null 2>&1 && [ "${NO_MPS:-0}" = 0 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=${TMPDIR:-/tmp}/mpcvit-mps-pipe CUDA_MPS_LOG_DIRECTORY=${TMPDIR:-/tmp}/mpcvit-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
$PY -m mpcvit train-queue --plan results/fashion_mnist_plan.json --device cuda --jobs "$JOBS" --status-every 15 "$@"
