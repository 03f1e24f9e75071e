#!/usr/bin/env bash
# CIFAR-10 at the paper's shape 7_4_32: search the head layout (MPCViT, MPCViT+; WAN costs from the measured
# table), derive mu = 0.1 / 0.3 / 0.7 and MPCViT+ at 0.3, then train results/cifar10_plan.json on one CUDA GPU
# (softmax teacher first, KD students after it). Not run yet: there is no CIFAR-10 here. The search itself
# ('mpcvit search') runs on the CPU (it has no --device yet): expect hours for 10 epochs.
# usage: bash results/run_cifar10_queue.sh DATA_DIR [extra mpcvit train-queue options]
# DATA_DIR holds CIFAR-10's python batches (data_batch_1..5, test_batch). Every step resumes when re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: $0 CIFAR10_DIR [train-queue options]}; shift
PY=${PY:-python3}
S=results/search
for kind in mpcvit mpcvitplus; do
  plus=(); [ $kind = mpcvitplus ] && plus=(--plus token)
  [ -f $S/cifar10_${kind}_wan/alphas.json ] || $PY -m mpcvit search --dataset cifar10 --data-dir "$DATA" \
    --model vit_7_4_32 --network wan --lambda 0.05 --epochs 10 --costs table "${plus[@]}" --no-progress \
    --out $S/cifar10_${kind}_wan
done
for mu in 0.1 0.3 0.7; do
  $PY -m mpcvit derive --search $S/cifar10_mpcvit_wan --mu $mu --out $S/arch/cifar10_mpcvit_mu$mu.json
done
$PY -m mpcvit derive --search $S/cifar10_mpcvitplus_wan --mu 0.3 --out $S/arch/cifar10_mpcvitplus_mu0.3.json
JOBS=${JOBS:-12}
if command -v nvidia-cuda-mps-control >/dev/null 2>&1 && [ "${NO_MPS:-0}" = 0 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=${TMPDIR:-/tmp}/mpcvit-mps-pipe CUDA_MPS_LOG_DIRECTORY=${TMPDIR:-/tmp}/mpcvit-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
$PY -m mpcvit train-queue --plan results/cifar10_plan.json --data-dir "$DATA" --device cuda --jobs "$JOBS" \
  --status-every 30 "$@"
