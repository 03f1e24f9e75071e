"""A real party process with a recorder: ``python tests/security/recording_party.py RECORD_DIR <party options>``.

The party code is the shipped one (``python -m parties``); the recorder only
wraps two methods, to keep what a protocol-following but curious party would
keep (``tests/security/hostile.py`` reads it back):

* every ``all_reduce`` of the gRPC communicator: the opened values (what the
  party learns from each opening) with the session id, one ``.pt`` file each;
* every ``GetSeed`` answer of the dealer client: the batch name, key,
  commitment and dealer instance, one JSON line each (``keys.jsonl``);
* the load id party 0 announces with the architecture (``loads.jsonl``).

Test-only: it lives under tests/ and is never imported by the packages.
"""

from __future__ import annotations

import itertools
import json
import os
import runpy
import sys
import threading
from pathlib import Path


def install(record: Path) -> None:
    import torch
    from torch.distributed import ReduceOp

    from parties import communicator, dealer, party

    record.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()
    lock = threading.Lock()
    prefix = f"{os.getpid()}"  # a restarted party writes beside its earlier life, never over it

    def append(name: str, entry: dict) -> None:
        with lock, (record / name).open("a") as f:
            f.write(json.dumps(entry) + "\n")

    original_all_reduce = communicator.GrpcCommunicator.all_reduce

    def all_reduce(self, input, op=ReduceOp.SUM, batched=False):  # noqa: A002, ANN001, ANN202
        out = original_all_reduce(self, input, op=op, batched=batched)
        opened = [t.detach().clone() for t in (out if batched else [out])]
        torch.save({"session": self.session.session_id, "op": str(op), "opened": opened},
                   record / f"open-{prefix}-{next(counter):07d}.pt")
        return out

    communicator.GrpcCommunicator.all_reduce = all_reduce

    original_get_key = dealer.DealerClient.get_key

    def get_key(self, batch_id, timeout=None):  # noqa: ANN001, ANN202
        seed = original_get_key(self, batch_id, timeout)
        if isinstance(seed, tuple):  # a party without commitments (the code before them): its key alone
            append("keys.jsonl", {"batch": batch_id, "key": seed[0].hex(), "pid": os.getpid()})
        else:
            append("keys.jsonl", {"batch": batch_id, "key": seed.key.hex(), "commitment": seed.commitment.hex(),
                                  "instance": seed.instance.hex(), "pid": os.getpid()})
        return seed

    dealer.DealerClient.get_key = get_key

    if not hasattr(party, "parse_load_id"):  # the code before party-drawn load ids: nothing to record
        return
    original_parse = party.parse_load_id

    def parse_load_id(announced):  # noqa: ANN001, ANN202
        load_id = original_parse(announced)
        append("loads.jsonl", {"load_id": f"{load_id:x}", "pid": os.getpid()})
        return load_id

    party.parse_load_id = parse_load_id


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.argv = ["parties", *sys.argv[2:]]
    runpy.run_module("parties", run_name="__main__")
