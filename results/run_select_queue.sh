#!/usr/bin/env bash
# The select gate's measurements, in one sitting, one after the other (timed runs first, alone on the CPUs): the
# 7_4_32 benchmark of the default runtime (fss: the ReLU-softmax heads on the two-round select gate) beside the
# product runtime it replaces (one-round product gate), spline and fss1; the same benchmark in a checkout of the
# main before the whole-cost work (OLD); 9_12_64; MPCFormer against MPCViT on a LAN with 9 repeats; the cost
# table; the dealer's material by kind (product and fss); the agreement of every Fashion-MNIST checkpoint with ReLU-softmax heads under fss.
# Every step is skipped when its marker exists (runs/select/), so re-running resumes.
# usage: bash results/run_select_queue.sh OLD_CHECKOUT   (a checkout of 39aa47f with the same .venv)
# Progress: runs/select/progress.log
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: $0 OLD_CHECKOUT}
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
M=runs/select
. results/queue_steps.sh
MODELS=vit,mpcformer,thex,relu,scale,mpcvit,mpcvitplus
step bench_7_4_32 $PY -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan --batch 1 --transport grpc \
  --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss1,spline,product,fss --out results/bench
step bench_7_4_32_old bash -c "cd $OLD && .venv/bin/python -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan \
  --batch 1 --transport grpc --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss --no-plots --out runs/bench_old \
  && mkdir -p $PWD/results/bench/before && cp runs/bench_old/results.json runs/bench_old/results.md $PWD/results/bench/before/"
step before_after $PY -m benchmarks.before_after results/bench/before/results.json results/bench/results.json \
  --out results/bench/before_after.md
step bench_9_12_64 $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 9_12_64 --network lan,wan --batch 1 \
  --transport grpc --repeats 1 --wan-repeats 1 --warmup 0 --protocols fss1,spline,product,fss --out results/bench/9_12_64
step lan_order $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 7_4_32 --network lan --batch 1 --transport grpc \
  --repeats 9 --warmup 2 --protocols fss --no-plots --out results/bench/lan_order
step cost_table $PY -m protocols.costs --out results/cost_table.json
step dealer_material $PY -m benchmarks.dealer_material --arch 7_4_32 --runtimes product,fss --out results/dealer_material.json
RELU_HEADS=mpcvit_4_4_28_mu0.1,mpcvit_4_4_28_mu0.3,mpcvit_4_4_28_mu0.7,mpcvitplus_4_4_28_mu0.3,relu_4_4_28,relu_4_4_28_kd
step agreement_select $PY -m benchmarks.agreement --runtimes fss --only $RELU_HEADS --images 2000 --batch-size 10 \
  --out results/agreement/agreement.json
log "queue finished"
