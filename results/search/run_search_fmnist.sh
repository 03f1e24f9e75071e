#!/usr/bin/env bash
# The Fashion-MNIST searches behind results/search/ (run once, in the background):
#   nohup bash results/search/run_search_fmnist.sh > results/search/logs/search_fmnist.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
MPCVIT=.venv/bin/mpcvit
# MPCViT: two-way (ReLU-softmax vs scaling) per head, WAN costs
$MPCVIT search --dataset fashion-mnist --model vit_4_4_28 --network wan --lambda 0.05 --epochs 3 \
  --train-limit 30000 --threads 1 --out results/search/fmnist_mpcvit_wan
# MPCViT+: also one beta per GeLU per token, WAN costs
$MPCVIT search --dataset fashion-mnist --model vit_4_4_28 --network wan --lambda 0.05 --epochs 3 \
  --train-limit 30000 --threads 1 --plus token --out results/search/fmnist_mpcvitplus_wan
