#!/usr/bin/env bash
# The whole-cost measurements, in one sitting, one after the other (timed runs first, so nothing else shares the
# CPUs with them): the 7_4_32 benchmark of this runtime (fss) beside the runtime before it (fss1), the same
# benchmark in a checkout of the main before the work (OLD), SPU at its best setting beside ours, the service's
# load benchmark in OLD and here, 9_12_64, ViT-B/16 measured whole, SPU's erf setting, the cost table, and the
# agreement runs. Every step is skipped when its marker exists (runs/whole_cost/), so re-running resumes.
# usage: bash results/run_whole_cost_queue.sh OLD_CHECKOUT   (a checkout of the earlier main with the same .venv)
# Progress: runs/whole_cost/progress.log
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: $0 OLD_CHECKOUT}
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
M=runs/whole_cost
. results/queue_steps.sh
MODELS=vit,mpcformer,thex,relu,scale,mpcvit,mpcvitplus
step bench_7_4_32 $PY -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan --batch 1 --transport grpc \
  --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss1,fss --out results/bench
step bench_7_4_32_old bash -c "cd $OLD && .venv/bin/python -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan \
  --batch 1 --transport grpc --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss --no-plots --out runs/bench_old \
  && mkdir -p $PWD/results/bench/before && cp runs/bench_old/results.json runs/bench_old/results.md $PWD/results/bench/before/"
step spu_7_4_32 $PY -m benchmarks.spu_bench --arch 7_4_32 --out results/spu
step load_old bash -c "cd $OLD && .venv/bin/python benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --sessions 1 4 \
  --levels 1 16 --requests-per-client 1 --min-requests 4 --batch-size 4 --request-timeout 600 --out $PWD/results/load_bench_before.json"
step load_new $PY benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --sessions 1 4 --levels 1 16 \
  --requests-per-client 1 --min-requests 4 --batch-size 4 --request-timeout 600 --out results/load_bench.json
step bench_9_12_64 $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 9_12_64 --network lan,wan --batch 1 \
  --transport grpc --repeats 1 --wan-repeats 1 --warmup 0 --protocols fss1,fss --out results/bench/9_12_64
step vit_b16 $PY benchmarks/large_vit.py --model vit_base_patch16_224 --measure-depth 0 --timeout 3000 --out results/bench/vit_b16_whole
step spu_7_4_32_erf $PY -m benchmarks.spu_bench --arch 7_4_32 --gelu erf --out results/spu
step cost_table $PY -m protocols.costs --out results/cost_table.json
# the agreement runs last (no timing in them): the default runtime on every checkpoint first, then the earlier one
step agreement_fss $PY -m benchmarks.agreement --runtimes fss --images 2000 --out results/agreement/agreement.json
step agreement_fss1 $PY -m benchmarks.agreement --runtimes fss1 --images 2000 --out results/agreement/agreement.json
log "queue finished"
