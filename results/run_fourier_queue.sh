#!/usr/bin/env bash
# The Fourier GeLU's measurements, in one sitting, one after the other (timed runs first, alone on the CPUs): the
# 7_4_32 benchmark of the default runtime (fss: the Fourier GeLU on certified layers) beside the spline runtime it
# replaces and fss1, the same benchmark in a checkout of the main before the whole-cost work (OLD), 9_12_64,
# MPCFormer against MPCViT on a LAN with 9 repeats, the service's throughput here and in OLD, its cold WAN latency,
# the numeric-safety rates, and the agreement of every Fashion-MNIST checkpoint with a GeLU layer under fss.
# Every step is skipped when its marker exists (runs/fourier/), so re-running resumes.
# usage: bash results/run_fourier_queue.sh OLD_CHECKOUT   (a checkout of 39aa47f with the same .venv)
# Progress: runs/fourier/progress.log
set -uo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: $0 OLD_CHECKOUT}
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
M=runs/fourier
. results/queue_steps.sh
MODELS=vit,mpcformer,thex,relu,scale,mpcvit,mpcvitplus
step bench_7_4_32 $PY -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan --batch 1 --transport grpc \
  --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss1,spline,fss --out results/bench
step bench_7_4_32_old bash -c "cd $OLD && .venv/bin/python -m mpcvit bench --models $MODELS --arch 7_4_32 --network lan,wan \
  --batch 1 --transport grpc --repeats 3 --wan-repeats 2 --warmup 1 --protocols fss --no-plots --out runs/bench_old \
  && mkdir -p $PWD/results/bench/before && cp runs/bench_old/results.json runs/bench_old/results.md $PWD/results/bench/before/"
step before_after $PY -m benchmarks.before_after results/bench/before/results.json results/bench/results.json \
  --out results/bench/before_after.md
step bench_9_12_64 $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 9_12_64 --network lan,wan --batch 1 \
  --transport grpc --repeats 1 --wan-repeats 1 --warmup 0 --protocols fss1,spline,fss --out results/bench/9_12_64
step lan_order $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 7_4_32 --network lan --batch 1 --transport grpc \
  --repeats 9 --warmup 2 --protocols fss --no-plots --out results/bench/lan_order
step load_old bash -c "cd $OLD && .venv/bin/python benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --sessions 1 4 \
  --levels 1 16 --requests-per-client 1 --min-requests 4 --batch-size 4 --request-timeout 600 --out $PWD/results/load_bench_before.json"
step load_new $PY benchmarks/load_bench.py --shape 7_4_32 --mu 0.1 --network wan --sessions 1 4 --levels 1 16 \
  --requests-per-client 1 --min-requests 4 --batch-size 4 --request-timeout 600 --out results/load_bench.json
for v in vit mpcvit; do
  step cold_$v $PY benchmarks/load_bench.py --shape 7_4_32 --variant $v --mu 0.1 --network wan --dealer-network wan \
    --prefetch ahead cold --levels 1 --requests-per-client 4 --min-requests 4 --batch-size 1 --request-timeout 600 \
    --out results/load_bench_cold_$v.json
done
step ns_expected $PY benchmarks/numeric_safety.py --parts expected --settings after,fss1 --out results/numeric_safety.json
step ns_md $PY benchmarks/numeric_safety.py --parts md --out results/numeric_safety.json
GELU=mpcvit_4_4_28_mu0.1,mpcvit_4_4_28_mu0.3,mpcvit_4_4_28_mu0.7,mpcvitplus_4_4_28_mu0.3,relu_4_4_28,relu_4_4_28_kd,scale_4_4_28,scale_4_4_28_kd,vit_4_4_28
step agreement_fss $PY -m benchmarks.agreement --runtimes fss --only $GELU --images 2000 --batch-size 10 \
  --out results/agreement/agreement.json
# after the agreement: SPU at its best setting beside this sitting's bench, the cost table, and the numeric-safety
# rates again with the report's merge fixed (a re-measured setting replaces its old sites whole)
step spu_7_4_32 $PY -m benchmarks.spu_bench --arch 7_4_32 --out results/spu
step spu_9_12_64 $PY -m benchmarks.spu_bench --arch 9_12_64 --models vit,mpcformer,mpcvit --mus 0.1 --out results/spu
step cost_table $PY -m protocols.costs --out results/cost_table.json
step ns_expected_clean $PY benchmarks/numeric_safety.py --parts expected --settings after,fss1 --out results/numeric_safety.json
step ns_md_clean $PY benchmarks/numeric_safety.py --parts md --out results/numeric_safety.json
log "queue finished"
