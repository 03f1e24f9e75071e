#!/usr/bin/env bash
# Superseded by results/run_fashion_mnist_queue.sh (one 40-epoch recipe, KD for every student that uses it);
# kept as the record of the first pass, whose checkpoints left checkpoints/ (results/fashion_mnist_earlier.json).
# MPCViT+ searched again with the measured cost table in the regulariser (the first searches ran on the placeholder),
# derived at mu 0.3 (GeLU kept where beta >= 0.5) and retrained with the same short KD recipe.
#   nohup bash results/search/run_plus_table_fmnist.sh > results/search/logs/plus_table_fmnist.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
MPCVIT=.venv/bin/mpcvit
$MPCVIT search --dataset fashion-mnist --model vit_4_4_28 --network wan --lambda 0.05 --epochs 3 \
  --train-limit 30000 --threads 1 --plus token --costs table --no-progress --out results/search/fmnist_mpcvitplus_wan_table
$MPCVIT derive --search results/search/fmnist_mpcvitplus_wan_table --mu 0.3 --costs table \
  --out results/search/arch/mpcvitplus_table_mu0.3.json
$PY -m mpcvit.search.retrain --arch results/search/arch/mpcvitplus_table_mu0.3.json \
  --teacher checkpoints/fashion-mnist/mpcvit-teacher_vit_4_4_28 --dataset fashion-mnist --epochs 2 --train-limit 20000 \
  --warmup-epochs 0.1 --pad 0 --no-flip --threads 1 --no-progress --out checkpoints/fashion-mnist/mpcvitplus_4_4_28_table_mu0.3
$PY -m mpcvit.search.pareto --checkpoints checkpoints/fashion-mnist --out results/search/pareto_fashion_mnist
