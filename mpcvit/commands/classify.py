"""``mpcvit classify IMAGE --server URL [--model M] [--json]``: one private classification.

Preprocess, encode in fixed point, split into two shares, seal each to its
party, send, open the two sealed logit shares, add: print the class and the
costs. The coordinator sees only sealed shares.

The parties' sealing keys come through the coordinator and are checked first:
against the deployment's CA certificate (``--ca ca.pem``: each key must be
signed by the certificate the CA issued to that party) or against pinned
fingerprints (``--pin sha256:... --pin sha256:...``, party 0 then party 1).
Without either the command refuses, before it sends anything.

``--compare-plaintext DIR``: with a local copy of the model's checkpoint, also
run it in the clear on this machine (``mpcvit predict``) and print both
classes and whether they agree (``--json``: ``plaintext`` and ``agree``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mpcvit.units import format_bytes

HELP = "classify an image privately through a coordinator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="PNG or JPEG file")
    parser.add_argument("--server", default=os.environ.get("MPCVIT_SERVER", "http://127.0.0.1:8000"),
                        help="coordinator URL (default $MPCVIT_SERVER or http://127.0.0.1:8000)")
    parser.add_argument("--model", default=None, help="model name (default: the first the coordinator lists)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--timeout", type=float, default=120.0, help="HTTP timeout, seconds (default 120)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list (default 3)")
    parser.add_argument("--ca", default=os.environ.get("MPCVIT_CA") or None,
                        help="the deployment's CA certificate (ca.pem): verify each party's sealing key against it (default $MPCVIT_CA)")
    parser.add_argument("--pin", action="append", default=None, metavar="SHA256",
                        help="pinned fingerprint of a party's sealing key, twice: party 0's then party 1's ('mpcvit certs request' prints them)")
    parser.add_argument("--compare-plaintext", default=None, metavar="DIR",
                        help="a local copy of the model's checkpoint: also run it in the clear on this machine and print "
                        "both classes (as 'mpcvit predict IMAGE --checkpoint DIR')")


def run(args: argparse.Namespace) -> int:
    import httpx

    from mpcvit.client import PrivateClient, ServerError
    from mpcvit.pki import PartyKeyError

    token = os.environ.get("MPCVIT_API_TOKEN") or None
    if args.ca is None and args.pin is None:
        print("mpcvit classify: error: give --ca ca.pem (the deployment's CA certificate) or --pin twice: "
              "the parties' keys are not taken on the coordinator's word", file=sys.stderr)
        return 2
    plain = None
    if args.compare_plaintext:  # before anything is sent: a wrong folder fails here
        from mpcvit.commands.predict import predict

        plain = predict(args.image, args.compare_plaintext)
    try:
        with PrivateClient(args.server, token=token, timeout=args.timeout, ca=args.ca, pins=args.pin) as client:
            result = client.classify(args.image, model=args.model)
    except PartyKeyError as exc:
        print(f"mpcvit classify: refusing to send the image: {exc}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"mpcvit classify: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"mpcvit classify: cannot reach the coordinator at {args.server}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = result.to_dict()
        if plain is not None:
            out["plaintext"] = plain
            out["agree"] = plain["class_index"] == result.class_index
        print(json.dumps(out, indent=2))
        return 0
    total = result.costs.get("total", {})
    if not result.probabilities:  # the model owner's policy reveals only the class (label) or the top K indices
        print(f"class: {result.class_name} (index {result.class_index}) model {result.model}, output policy {result.output_policy}")
        if len(result.top_k) > 1:
            print("top: " + ", ".join(str(i) for i in result.top_k))
    else:
        print(f"class: {result.class_name} (index {result.class_index}, p={result.probabilities[result.class_index]:.3f}) model {result.model}")
        ranked = sorted(range(len(result.probabilities)), key=lambda i: -result.probabilities[i])[: max(1, args.top)]
        print("top: " + ", ".join(f"{i}:{result.probabilities[i]:.3f}" for i in ranked))
    print(
        f"costs: {total.get('rounds', '?')} rounds, {format_bytes(total.get('bytes'))} sent by both parties, "
        f"{float(total.get('seconds', 0)):.3f} s secure forward (batch of {result.batch_size}, queued {result.queue_seconds:.3f} s), "
        f"{result.seconds:.3f} s end to end"
    )
    if plain is not None:
        same = plain["class_index"] == result.class_index
        print(f"plaintext: {plain['class_name']} (index {plain['class_index']}, "
              f"p={plain['probabilities'][plain['class_index']]:.3f}) checkpoint {plain['label']} on this machine; "
              f"{'agrees with' if same else 'DIFFERS from'} the private class")
        if plain["name"] != result.model:
            print(f"note: the coordinator served {result.model!r}, the local checkpoint is {plain['name']!r}")
    return 0
