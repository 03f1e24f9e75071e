#!/usr/bin/env bash
# Superseded by results/run_fashion_mnist_queue.sh (one 40-epoch recipe, KD for every student that uses it);
# kept as the record of the first pass, whose checkpoints left checkpoints/ (results/fashion_mnist_earlier.json).
# Derive MPCViT (mu in 0.1 0.3 0.5 0.7) and MPCViT+ from the Fashion-MNIST searches and retrain each from scratch
# with KD from the softmax teacher, plus a softmax reference re-run with the very same (short) recipe.
#   nohup bash results/search/run_retrain_fmnist.sh > results/search/logs/retrain_fmnist.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
MPCVIT=.venv/bin/mpcvit
# the KD teacher: a softmax ViT we trained without KD (mpcvit-teacher_vit_4_4_28, see README.md)
TEACHER=${TEACHER:-checkpoints/fashion-mnist/mpcvit-teacher_vit_4_4_28}
CK=checkpoints/fashion-mnist
ARCH=results/search/arch
# the short recipe (documented in results/search/README.md): mpcvit.train's Fashion-MNIST recipe (AdamW lr 2e-3,
# batch 128, cosine, label smoothing 0.1, KD: logit KL T=4 + token-feature MSE) with a 0.1-epoch warm-up and no
# augmentation, for EPOCHS epochs on a fixed random TRAIN_LIMIT-image subset of the train split; evaluated on the
# full 10k test split. The teacher was trained the same way (no KD) for 2 epochs on the whole train split:
#   python -m mpcvit.search.retrain --model vit_4_4_28 --role teacher --dataset fashion-mnist --epochs 2 \
#     --warmup-epochs 0.1 --pad 0 --no-flip --threads 1 --out checkpoints/fashion-mnist/mpcvit-teacher_vit_4_4_28
RECIPE=(--dataset fashion-mnist --epochs ${EPOCHS:-2} --train-limit ${TRAIN_LIMIT:-20000} --warmup-epochs 0.1 --pad 0
        --no-flip --threads 1 --no-progress)
mkdir -p $ARCH
for mu in 0.1 0.3 0.5 0.7; do
  $MPCVIT derive --search results/search/fmnist_mpcvit_wan --mu $mu --out $ARCH/mpcvit_mu$mu.json
done
$MPCVIT derive --search results/search/fmnist_mpcvitplus_wan --mu ${PLUS_MU:-0.3} \
  --out $ARCH/mpcvitplus_mu${PLUS_MU:-0.3}.json
until [ -f $TEACHER/meta.json ]; do echo "waiting for the teacher $TEACHER"; sleep 60; done
train() { $PY -m mpcvit.search.retrain "$@" --teacher $TEACHER "${RECIPE[@]}"; }
# the baselines (softmax ViT, MPCFormer, THE-X, all-ReLU-softmax, all-scaling) re-run with the very same recipe
# (KD from the same teacher), and the derived models
ref() { train --model $1_4_4_28 --role reference --out $CK/mpcvit-reference_$1_4_4_28; }
# four streams, one thread each
( ref vit; train --arch $ARCH/mpcvit_mu0.7.json --out $CK/mpcvit_4_4_28_mu0.7; ref thex ) > results/search/logs/retrain_stream1.log 2>&1 &
( train --arch $ARCH/mpcvit_mu0.3.json --out $CK/mpcvit_4_4_28_mu0.3; ref scale; ref mpcformer ) > results/search/logs/retrain_stream2.log 2>&1 &
( train --arch $ARCH/mpcvit_mu0.5.json --out $CK/mpcvit_4_4_28_mu0.5; ref relu ) > results/search/logs/retrain_stream3.log 2>&1 &
( train --arch $ARCH/mpcvit_mu0.1.json --out $CK/mpcvit_4_4_28_mu0.1
  train --arch $ARCH/mpcvitplus_mu${PLUS_MU:-0.3}.json --out $CK/mpcvitplus_4_4_28_mu${PLUS_MU:-0.3} ) > results/search/logs/retrain_stream4.log 2>&1 &
wait
$PY -m mpcvit.search.pareto --checkpoints $CK --out results/search/pareto_fashion_mnist
