"""Output policies on a served model: what a ``label`` / ``topk:3`` client receives, agreement with plaintext, costs.

Copies one committed checkpoint (``--checkpoint``, default the Fashion-MNIST
``mpcvit_4_4_28_mu0.1``) into a temporary models folder three times: as
``<name>-label`` (meta.json ``"output_policy": "label"``), ``<name>-top3``
(``"topk:3"``) and ``<name>`` unchanged (the default, ``logits``: the
baseline whose costs the policies are compared with). One local stack
(``mpcvit.localstack``: dealer, party 0, party 1, coordinator, mutual TLS,
loopback; coordinator batch size 1) serves the folder, and the SDK
(``PrivateClient.classify``, the client trusting the stack's CA) classifies
the first ``--images`` test images of the checkpoint's data set under each
policy, one request at a time, after one warm-up request per model (not
counted: it includes loading the model on the parties).

For every answer the script checks the raw HTTP response (an httpx response
hook keeps the JSON body of each ``POST /v1/classify``; a spy around the SDK's
``seal_input`` keeps the one-time key of the request, so each box can also be
opened on its own):

* its fields are exactly those of a private answer (model, request_id,
  session_id, coordinator_saw_image = false, output_shares, precision_bits,
  output_policy, costs, queue_seconds, batch_size), ``output_policy`` is the
  model's, and no key anywhere in it is ``logits``, ``probabilities``,
  ``top_k`` or ``class_index``;
* it has two output shares, each ``{shape, dtype, nonce, ciphertext}`` with
  shape ``[K]``, dtype ``int64`` and a ciphertext of exactly ``8 K + 16``
  bytes (K int64 values and the AES-GCM tag), K = 1 for label, 3 for topk:3;
* each box, opened alone with the request's key, is K int64 values; their sum
  on Z_2^64 is the SDK's answer (``Result.top_k``), and the SDK's ``Result``
  has no logits or probabilities.

The checks check themselves: four doctored copies of each policy's first
answer (a ``logits`` field added, ``probabilities`` nested in the costs, 8
more ciphertext bytes, a box of logit shape) must each fail them.

Agreement with the plaintext model (float32, the checkpoint's
normalisation): label, the class equals the plaintext argmax; topk:3, the
ordered top 3 equals ``torch.topk(logits, 3)``, and the set of the three.
Near-ties are counted apart: the top-two gap (plaintext logits) below
``--tie`` (0.05) for label; any of the gaps between ranks 1-2, 2-3, 3-4 below
it for the ordered top 3; the gap between ranks 3 and 4 for the set.

Costs per request (batch size 1) come from the answer's ``costs``: rounds
(max over the parties), bytes sent by both parties, the dealer's bytes, the
forward's seconds, and the client's wall time (seal, send, open). The REST
answer carries no per-op costs (the parties' ``output-label`` /
``output-topk`` entries stay in the gRPC ``Costs``), so the price of a policy
is reported as its difference from the ``logits`` model's costs
(``--baseline`` requests on the same stack); per-op entries are recorded when
an answer does carry them (``costs.ops``).

    python -m benchmarks.output_policy                            # 200 Fashion-MNIST images -> results/output_policy/
    python -m benchmarks.output_policy --smoke --out /tmp/op.json # digits model, 4 images

Writes the JSON (command, machine, commit) to ``--out`` and a markdown table
beside it (same stem, ``.md``). Exit status 1 if an answer broke a wire
check or a request failed; disagreements are reported, not fatal.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "fashion-mnist" / "mpcvit_4_4_28_mu0.1"
SMOKE_CHECKPOINT = ROOT / "checkpoints" / "digits" / "mpcvit_2_4_8"
POLICIES: tuple[tuple[str, str, int], ...] = (("label", "label", 1), ("top3", "topk:3", 3))  # (suffix, policy, K)
ANSWER_FIELDS = frozenset({"model", "request_id", "session_id", "coordinator_saw_image", "output_shares", "precision_bits",
                           "output_policy", "costs", "queue_seconds", "batch_size"})
BOX_FIELDS = frozenset({"shape", "dtype", "nonce", "ciphertext"})
FORBIDDEN_KEYS = frozenset({"logits", "probabilities", "top_k", "class_index", "class_name"})
TAG_BYTES = 16
DOCTORED = ("a logits field", "nested probabilities", "8 more ciphertext bytes", "a logit-shaped box")

log = logging.getLogger("output_policy")


# -- observing the SDK -----------------------------------------------------------


class RawAnswers:
    """An httpx response hook: the JSON body of the last ``POST /v1/classify`` answer, as it came over the wire."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.raw_bytes = 0

    def __call__(self, response: Any) -> None:
        if response.request.method == "POST" and response.request.url.path.endswith("/v1/classify"):
            response.read()
            self.raw_bytes = len(response.content)
            self.last = json.loads(response.content) if response.status_code == 200 else None


@contextmanager
def seal_spy() -> Iterator[list[Any]]:
    """Keep each ``SealedRequest`` the SDK makes (its one-time key opens the boxes); the SDK itself is unchanged."""
    import mpcvit.client as sdk

    made: list[Any] = []
    original = sdk.seal_input

    def spy(*args: Any, **kwargs: Any) -> Any:
        req = original(*args, **kwargs)
        made.append(req)
        return req

    sdk.seal_input = spy
    try:
        yield made
    finally:
        sdk.seal_input = original


def _keys_anywhere(value: Any) -> set[str]:
    keys: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys |= set(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return keys


def check_answer(body: dict[str, Any], model: str, policy: str, k: int, request: Any, party_keys: list[bytes],
                 result: Any) -> list[str]:
    """The wire checks of the module docstring on one raw answer; the problems found (empty: none)."""
    from mpcvit.client import sealed_from_json
    from mpcvit.sealing import BoxContext, open_tensor

    problems = []
    if set(body) != ANSWER_FIELDS:
        problems.append(f"fields {sorted(set(body) ^ ANSWER_FIELDS)} differ from a private answer's")
    if body.get("output_policy") != policy or body.get("model") != model or body.get("coordinator_saw_image") is not False:
        problems.append(f"model/policy/coordinator_saw_image: {body.get('model')}, {body.get('output_policy')}, "
                        f"{body.get('coordinator_saw_image')}")
    if request is not None and body.get("request_id") != request.request_id:
        problems.append("the answer's request_id is not the request's")
    leaked = _keys_anywhere(body) & FORBIDDEN_KEYS
    if leaked:
        problems.append(f"keys {sorted(leaked)} in the answer")
    shares = body.get("output_shares") or []
    if len(shares) != 2:
        problems.append(f"{len(shares)} output shares")
    opened = []
    for rank, box in enumerate(shares[:2]):
        if set(box) != BOX_FIELDS:
            problems.append(f"box {rank} fields {sorted(box)}")
            continue
        ct = base64.b64decode(box["ciphertext"])
        if box["shape"] != [k] or box["dtype"] != "int64" or len(ct) != 8 * k + TAG_BYTES:
            problems.append(f"box {rank}: shape {box['shape']}, dtype {box['dtype']}, {len(ct)} ciphertext bytes "
                            f"(expected [{k}], int64, {8 * k + TAG_BYTES})")
        if request is not None:
            y = open_tensor(sealed_from_json(box), request.keypair.private, party_keys[rank],
                            BoxContext(request.request_id, model, rank, "output"))
            if y.dtype != torch.int64 or tuple(y.shape) != (k,):
                problems.append(f"box {rank} opens to {y.dtype} {tuple(y.shape)}, expected int64 ({k},)")
            opened.append(y)
    if len(opened) == 2 and not problems:
        indices = [int(v) for v in opened[0] + opened[1]]
        if indices != list(result.top_k) or indices[0] != result.class_index:
            problems.append(f"the boxes open to {indices}, the SDK answered {result.top_k}")
    if result.logits or result.probabilities:
        problems.append("the SDK's Result holds logits / probabilities")
    return problems


def _doctored(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Copies of a good answer that leak or pad: each must fail :func:`check_answer`."""
    out = []
    extra = json.loads(json.dumps(body))
    extra["logits"] = [0.0] * 10
    out.append(("a logits field", extra))
    nested = json.loads(json.dumps(body))
    nested["costs"]["probabilities"] = [0.1] * 10
    out.append(("nested probabilities", nested))
    longer = json.loads(json.dumps(body))
    box = longer["output_shares"][0]
    box["ciphertext"] = base64.b64encode(base64.b64decode(box["ciphertext"]) + bytes(8)).decode()
    out.append(("8 more ciphertext bytes", longer))
    shape = json.loads(json.dumps(body))
    shape["output_shares"][1]["shape"] = [10]
    out.append(("a logit-shaped box", shape))
    return out


# -- the run ---------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def make_models(checkpoint: Path, folder: Path) -> dict[str, str]:
    """``folder/<name>`` (logits), ``<name>-label``, ``<name>-top3``: the checkpoint with each policy; name -> policy."""
    name = checkpoint.name
    models = {name: "logits"}
    shutil.copytree(checkpoint, folder / name)
    for suffix, policy, _ in POLICIES:
        dst = folder / f"{name}-{suffix}"
        shutil.copytree(checkpoint, dst)
        meta = json.loads((dst / "meta.json").read_text())
        meta["output_policy"] = policy
        (dst / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        models[dst.name] = policy
    return models


def _stats(values: list[float], digits: int = 3) -> dict[str, float | None]:
    if not values:
        return {"median": None, "mean": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), digits), "mean": round(statistics.fmean(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def _costs_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = sorted({r["rounds"] for r in records})
    nbytes = sorted({r["bytes"] for r in records})
    out = {
        "rounds": rounds[0] if len(rounds) == 1 else rounds,
        "bytes": nbytes[0] if len(nbytes) == 1 else nbytes,
        "dealer_bytes": sorted({r["dealer_bytes"] for r in records}),
        "answer_json_bytes": _stats([float(r["answer_json_bytes"]) for r in records], 0),
        "forward_seconds": _stats([r["forward_seconds"] for r in records]),
        "client_seconds": _stats([r["client_seconds"] for r in records]),
    }
    ops = [r["ops"] for r in records if r.get("ops")]
    out["ops"] = ops[0] if ops else "absent from the REST answer (per-op costs stay in the parties' gRPC Costs)"
    return out


def classify_all(client: Any, spy: list[Any], raw: RawAnswers, model: str, policy: str, k: int, images: torch.Tensor,
                 party_keys: list[bytes]) -> tuple[list[dict[str, Any]], list[str]]:
    """One private request per image; per image its indices and costs, and every wire problem found."""
    records, problems = [], []
    for i, image in enumerate(images):
        spy.clear()
        raw.last = None
        try:
            result = client.classify(image, model=model)
        except Exception as exc:  # noqa: BLE001 (a failed request is reported, the run goes on)
            problems.append(f"{model} image {i}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        body = raw.last
        if body is None:
            problems.append(f"{model} image {i}: no raw answer recorded")
            continue
        if k:
            found = check_answer(body, model, policy, k, spy[-1] if spy else None, party_keys, result)
            problems += [f"{model} image {i}: {p}" for p in found]
            if i == 0:  # the checks themselves: a doctored copy of this answer must fail them
                problems += [f"{model}: the wire check passed a doctored answer ({what})"
                             for what, doctored in _doctored(body) if not check_answer(doctored, model, policy, k, None,
                                                                                           party_keys, result)]
        costs = body["costs"]
        records.append({
            "image": i, "indices": list(result.top_k) if k else [result.class_index],
            "rounds": int(costs["total"]["rounds"]), "bytes": int(costs["total"]["bytes"]),
            "dealer_bytes": sum(int(p.get("dealer", {}).get("bytes", 0)) for p in costs["parties"]),
            "forward_seconds": float(costs["total"]["seconds"]), "client_seconds": float(result.seconds),
            "answer_json_bytes": raw.raw_bytes, "batch_size": int(body["batch_size"]), "ops": costs.get("ops"),
            **({} if k else {"logits": list(result.logits)}),
        })
        if (i + 1) % max(len(images) // 10, 1) == 0:
            log.info("%s: %d/%d answered (%d problems so far)", model, i + 1, len(images), len(problems))
    return records, problems


def agreement(records: list[dict[str, Any]], logits: torch.Tensor, k: int, tie: float) -> dict[str, Any]:
    """Private indices against the plaintext top-k, with near-ties counted apart."""
    top = logits.topk(min(4, logits.shape[-1]), dim=-1)
    gaps = top.values[:, :-1] - top.values[:, 1:]  # gaps[:, j]: rank j's lead over rank j + 1
    ordered = set_eq = 0
    near_ordered = near_set = 0
    dis_ordered: list[dict[str, Any]] = []
    dis_set: list[dict[str, Any]] = []
    for r in records:
        i = r["image"]
        want = top.indices[i, :k].tolist()
        near_o = bool((gaps[i, :k] < tie).any()) if k > 1 else bool(gaps[i, 0] < tie)
        near_s = bool(gaps[i, k - 1] < tie)
        near_ordered += near_o
        near_set += near_s
        ok_o, ok_s = r["indices"] == want, set(r["indices"]) == set(want)
        ordered += ok_o
        set_eq += ok_s
        if not ok_o:
            dis_ordered.append({"image": i, "private": r["indices"], "plaintext": want, "near_tie": near_o,
                                "gaps": [round(float(g), 4) for g in gaps[i, :k]]})
        if not ok_s:
            dis_set.append({"image": i, "private": r["indices"], "plaintext": want, "near_tie": near_s})
    n = len(records)
    out: dict[str, Any] = {
        "images": n,
        "agree": ordered, "agree_fraction": round(ordered / n, 4) if n else None,
        "near_ties": near_ordered,
        "disagree": len(dis_ordered), "disagree_near_ties": sum(d["near_tie"] for d in dis_ordered),
        "disagree_clear": sum(not d["near_tie"] for d in dis_ordered),
        "disagreements": dis_ordered[:50],
    }
    if k > 1:
        out["set"] = {"agree": set_eq, "agree_fraction": round(set_eq / n, 4) if n else None, "near_ties": near_set,
                      "disagree": len(dis_set), "disagree_near_ties": sum(d["near_tie"] for d in dis_set),
                      "disagreements": dis_set[:50]}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from mpcvit.checkpoint import load_checkpoint, normalise_input
    from mpcvit.client import PrivateClient
    from mpcvit.data import load_dataset
    from mpcvit.localstack import LocalStack, StackConfig

    commit = _git_commit()  # the code the stack runs: taken before it starts
    checkpoint = args.checkpoint.resolve()
    net, meta = load_checkpoint(checkpoint)
    dataset = str(meta.get("dataset") or "digits")
    images = load_dataset(dataset, "test").tensors[0][: args.images]
    with torch.no_grad():
        logits = net(normalise_input(images, meta)).float()
    os.environ["MPCVIT_BATCH_SIZE"] = "1"  # one forward per request: its costs are one image's
    name = checkpoint.name
    results: dict[str, Any] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mpcvit-policy-models-") as tmp:
        models = make_models(checkpoint, Path(tmp))
        config = StackConfig(models_dir=Path(tmp), model=f"{name}-label", insecure=args.insecure)
        t_stack = time.perf_counter()
        with LocalStack(config) as stack, seal_spy() as spy:
            assert stack.endpoints is not None
            log.info("stack up in %.1f s: %s", time.perf_counter() - t_stack, stack.endpoints.coordinator_url)
            raw = RawAnswers()
            http = httpx.Client(base_url=stack.endpoints.coordinator_url, timeout=600, event_hooks={"response": [raw]})
            with PrivateClient(http_client=http, **stack.client_trust()) as client:
                listed = {m: client.models()[m].get("output_policy") for m in models}
                if listed != models:
                    problems.append(f"/v1/models lists the policies {listed}, expected {models}")
                keys = client.party_keys()
                runs = [(name, "logits", 0, images[: args.baseline])] + [
                    (f"{name}-{suffix}", policy, k, images) for suffix, policy, k in POLICIES]
                for model, policy, k, batch in runs:
                    t0 = time.perf_counter()
                    warm, warm_problems = classify_all(client, spy, raw, model, policy, k, images[:1], keys)  # loads the model
                    problems += [f"warm-up: {p}" for p in warm_problems]
                    log.info("%s (%s): warm-up %.1f s", model, policy, time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    records, found = classify_all(client, spy, raw, model, policy, k, batch, keys)
                    seconds = time.perf_counter() - t0
                    problems += found
                    entry: dict[str, Any] = {"model": model, "policy": policy, "indices_per_answer": k,
                                             "requests": len(batch), "answered": len(records), "seconds": round(seconds, 1),
                                             "costs": _costs_summary(records) if records else None,
                                             "batch_sizes": sorted({r["batch_size"] for r in records})}
                    if k:
                        entry["agreement"] = agreement(records, logits, k, args.tie)
                        entry["answers"] = {str(r["image"]): r["indices"] for r in records}  # image -> the opened indices
                        entry["wire"] = {"checked": len(records), "problems": len(found),
                                         "expected_ciphertext_bytes": 8 * k + TAG_BYTES,
                                         "self_check": "doctored copies of the first answer (" + ", ".join(DOCTORED) + "): "
                                         + ("one passed" if any("doctored" in f for f in found) else "each refused")}
                    else:  # the baseline's class against the plaintext argmax, and how far its logits are from plaintext
                        entry["agreement"] = agreement(records, logits, 1, args.tie)
                        err = [abs(v - float(logits[r["image"], j])) for r in records for j, v in enumerate(r["logits"])]
                        entry["logit_error_vs_plaintext"] = {"max": round(max(err), 4), "mean": round(statistics.fmean(err), 4)}
                    results[policy] = entry
                    log.info("%s: %s", model, {kk: entry[kk] for kk in ("answered", "seconds")})
    base = results["logits"]["costs"]
    for _, policy, _ in POLICIES:
        c = results[policy]["costs"]
        if c and base and isinstance(c["rounds"], int) and isinstance(base["rounds"], int) \
                and isinstance(c["bytes"], int) and isinstance(base["bytes"], int):
            results[policy]["over_logits"] = {"rounds": c["rounds"] - base["rounds"], "bytes": c["bytes"] - base["bytes"],
                                              "dealer_bytes": c["dealer_bytes"][0] - base["dealer_bytes"][0]}
    return {
        "benchmark": "output policies: raw answers under label / topk:3, agreement with the plaintext model, costs per request",
        "checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.is_relative_to(ROOT) else checkpoint.name,
        "dataset": dataset,
        "test_images": f"the first {len(images)} of the {dataset} test split",
        "stack": f"local: dealer + party 0 + party 1 + coordinator, loopback, {'plaintext gRPC' if args.insecure else 'mutual TLS'}; "
                 "coordinator batch size 1, one request at a time",
        "near_tie_threshold": args.tie,
        "plaintext": "the checkpoint's model in float32 on the normalised images; torch.topk of its logits",
        "policies": results,
        "wire_problems": len(problems),
        "problem_samples": problems[:20],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "commit": commit,
        "command": " ".join(["python -m benchmarks.output_policy", *args.argv]),
    }


def render(result: dict[str, Any]) -> str:
    """A short markdown table of one run."""
    tie = result["near_tie_threshold"]
    lines = [
        f"# Output policies on `{result['checkpoint']}`",
        "",
        f"{result['test_images']}; {result['stack']}. Commit {result['commit']}; `{result['command']}`.",
        "",
        f"| policy | images | agree with plaintext | near-ties (gap < {tie}) | disagreements (near-ties) | "
        "rounds / request | bytes / request | over logits (rounds, bytes) | s / request (forward, client, median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy, e in result["policies"].items():
        a, c = e["agreement"], e["costs"] or {}
        what = {"logits": "argmax", "label": "top-1"}.get(policy, "ordered top-3")
        over = e.get("over_logits")
        row = (f"| {policy} | {a['images']} | {a['agree']}/{a['images']} ({what}) | {a['near_ties']} | "
               f"{a['disagree']} ({a['disagree_near_ties']}) | {c.get('rounds')} | {c.get('bytes')} | "
               f"{'+%d, +%d' % (over['rounds'], over['bytes']) if over else '-'} | "
               f"{c.get('forward_seconds', {}).get('median')}, {c.get('client_seconds', {}).get('median')} |")
        lines.append(row)
        if "set" in a:
            s = a["set"]
            lines.append(f"| {policy} (as a set) | {a['images']} | {s['agree']}/{a['images']} (top-3 set) | {s['near_ties']} | "
                         f"{s['disagree']} ({s['disagree_near_ties']}) | | | | |")
    lines += [
        "",
        f"Wire checks (fields, no logits, boxes of K int64 values, ciphertext 8K+16 bytes): {result['wire_problems']} problems.",
        "The logits row is the baseline (the same checkpoint without a policy, fewer requests) that the costs are compared with"
        + (f"; its opened logits are within {result['policies']['logits']['logit_error_vs_plaintext']['max']} of the plaintext "
           "model's." if "logit_error_vs_plaintext" in result["policies"].get("logits", {}) else "."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: {DEFAULT_CHECKPOINT.relative_to(ROOT)}")
    p.add_argument("--images", type=int, default=None, help="test images per policy (default 200; --smoke: 4)")
    p.add_argument("--baseline", type=int, default=None, help="requests on the logits model, for its costs (default 10; --smoke: 1)")
    p.add_argument("--tie", type=float, default=0.05, help="a gap between ranks below this (plaintext logits) is a near-tie")
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC between the roles (default: mutual TLS)")
    p.add_argument("--smoke", action="store_true", help=f"smallest mode: {SMOKE_CHECKPOINT.relative_to(ROOT)}, 4 images")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/output_policy/<dataset>_<model>.json); "
                   "the markdown table beside it")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.checkpoint = args.checkpoint or (SMOKE_CHECKPOINT if args.smoke else DEFAULT_CHECKPOINT)
    args.images = args.images or (4 if args.smoke else 200)
    args.baseline = args.baseline or (1 if args.smoke else 10)
    result = run(args)
    out = args.out or ROOT / "results" / "output_policy" / f"{result['dataset'].replace('-', '_')}_{args.checkpoint.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(render(result))
    bad = result["wire_problems"] or any(e["answered"] != e["requests"] for e in result["policies"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
