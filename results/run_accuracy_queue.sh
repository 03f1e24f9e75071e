#!/usr/bin/env bash
# The accuracy and cold-start measurements of the whole-cost runtime, one after the other (the timed cold runs alone
# on the machine): the agreement runs at batch 10 (a batch under fss_max_values, so every comparison runs on the DCF
# gate as one image is served; the earlier batch of 100 made GeLU and the max tree fall back to the ring circuits),
# the numeric-safety ranges, expected catastrophic-truncation rates and empirical errors of this runtime beside fss1,
# the service's cold start (the dealer's material over a shaped WAN link at request time) beside the warm one, and
# SPU's 9_12_64 rows at its best setting beside ours.
# Every step is skipped when its marker exists (runs/accuracy/), so re-running resumes.
# usage: bash results/run_accuracy_queue.sh      Progress: runs/accuracy/progress.log
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
M=runs/accuracy
. results/queue_steps.sh
step agreement_fss $PY -m benchmarks.agreement --runtimes fss --images 2000 --batch-size 10 --out results/agreement/agreement.json
step ns_ranges $PY benchmarks/numeric_safety.py --parts ranges --out results/numeric_safety.json
step ns_expected $PY benchmarks/numeric_safety.py --parts expected --settings after,fss1 --out results/numeric_safety.json
step ns_empirical $PY benchmarks/numeric_safety.py --parts empirical --settings after,fss1 --out results/numeric_safety.json
step ns_md $PY benchmarks/numeric_safety.py --parts md --out results/numeric_safety.json
for v in vit mpcvit; do
  step cold_$v $PY benchmarks/load_bench.py --shape 7_4_32 --variant $v --mu 0.1 --network wan --dealer-network wan \
    --prefetch ahead cold --levels 1 --requests-per-client 4 --min-requests 4 --batch-size 1 --request-timeout 600 \
    --out results/load_bench_cold_$v.json
done
# SPU at 9_12_64 at its best setting (tanh GeLU), beside ours re-run in the same sitting
step bench_9_12_64 $PY -m mpcvit bench --models mpcformer,mpcvit --mu 0.1 --arch 9_12_64 --network lan,wan --batch 1 \
  --transport grpc --repeats 1 --wan-repeats 1 --warmup 0 --protocols fss1,fss --out results/bench/9_12_64
step spu_9_12_64 $PY -m benchmarks.spu_bench --arch 9_12_64 --models vit,mpcformer,mpcvit --mus 0.1 --out results/spu
step agreement_fss1 $PY -m benchmarks.agreement --runtimes fss1 --images 2000 --batch-size 10 --out results/agreement/agreement.json
