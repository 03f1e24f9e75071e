"""Load and forward costs on the real processes, for comparing two checkouts side by side.

    cd CHECKOUT && PYTHONPATH=CHECKOUT python /path/to/overhead.py CHECKOUT 20

Starts the dealer and two parties (the shipped processes, no recorder) of
CHECKOUT with ``tests/security/hostile.py``'s stack, loads a digits-shaped
model three times and runs N forwards of one image under one ticket series;
prints one JSON line: the load's rounds and median seconds, the forward's
rounds, bytes sent and median / minimum seconds. Run it alternately on two
checkouts (old new old new ...) and compare pair by pair; the result of
0d0a6e5 against the hostile-coordinator changes is in
results/security/overhead.txt.
"""
import json, sys, tempfile, time, uuid
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.security.hostile import Stack, failed
class Plain(Stack):
    def _command(self, role):
        cmd = super()._command(role)
        if role.startswith("party"):
            return ["-m", "parties", *cmd[2:]]  # no recorder: the shipped party process
        return cmd
import torch
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
with tempfile.TemporaryDirectory() as tmp:
    s = Plain(Path(tmp)); s.start()
    try:
        loads = []
        for i in range(3):
            t0 = time.perf_counter(); r = s.load("private"); loads.append(time.perf_counter() - t0)
            assert not failed(r), r
        load_rounds = r[0].costs.rounds
        series = uuid.uuid4().hex; secs = []; rounds = set(); nbytes = set()
        for i in range(n):
            images = torch.rand(1, 1, 8, 8)
            req, cl = s.infer_requests("private", images, tickets=((series, i), (series, i)))
            t0 = time.perf_counter(); rep = s.both("Infer", req); secs.append(time.perf_counter() - t0)
            assert not failed(rep), rep
            rounds.add(rep[0].costs.rounds); nbytes.add(rep[0].costs.bytes_sent)
        secs.sort(); loads.sort()
        print(json.dumps({"load_rounds": load_rounds, "load_s_median": loads[1], "forward_rounds": sorted(rounds),
                          "forward_bytes_sent": sorted(nbytes), "forward_s_median": secs[len(secs)//2], "forward_s_min": secs[0]}))
    finally:
        s.close()
