"""``mpcvit certs``: the deployment's PKI, one step per party to it (see ``mpcvit.pki``).

Across organisations, each step runs where its key lives::

    mpcvit certs ca --out ca/                                      # the CA operator: ca.key (0600) + ca.pem
    mpcvit certs request --role party0 --out p0/ --hosts p0.example.org   # each role: its key + p0/party0.csr
    mpcvit certs sign --ca ca/ --role party0 --csr party0.csr --out party0.pem   # the CA operator, on the .csr it got
    # the role then holds ca.pem, party0.pem and party0.key in one directory: mpcvit party --certs p0/ ...

On one machine (the demo, tests), the same steps in one command::

    mpcvit certs local --out certs/ [--hosts NAME ...]    # certs/ca/ and certs/<role>/ for each role
    mpcvit certs --out certs/                             # the same (older spelling)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "the PKI: make a CA, a role's key and request, sign requests, or all of it locally"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mpcvit.pki import LOOPBACK_HOSTS, ROLES

    parser.add_argument("--out", type=Path, help="(without a step) the same as 'local --out OUT'")
    parser.add_argument("--hosts", nargs="*", default=None, help="(without a step) as for 'local'")
    steps = parser.add_subparsers(dest="step", metavar="STEP")
    ca = steps.add_parser("ca", help="make the CA: ca.key (mode 0600, keep it offline) and ca.pem (give it to every role and client)")
    ca.add_argument("--out", type=Path, required=True, help="directory for ca.key and ca.pem")
    req = steps.add_parser("request", help="make a role's private key (0600) and its certificate request <role>.csr for the CA")
    req.add_argument("--role", required=True, choices=ROLES)
    req.add_argument("--out", type=Path, required=True, help="the role's own directory (its process reads it with --certs)")
    req.add_argument("--hosts", nargs="*", default=[], help="DNS names / IPs the role is reached at (the certificate's SANs)")
    sign = steps.add_parser("sign", help="the CA signs one role's request; send the .pem (and ca.pem) back to that role")
    sign.add_argument("--ca", type=Path, required=True, help="the CA directory (ca.key, ca.pem)")
    sign.add_argument("--role", required=True, choices=ROLES, help="the role the certificate is for (must match the request)")
    sign.add_argument("--csr", type=Path, required=True, help="the role's <role>.csr")
    sign.add_argument("--out", type=Path, required=True, help="where to write the certificate (<role>.pem)")
    local = steps.add_parser("local", help="the whole workflow on one machine: OUT/ca/ and OUT/<role>/ for every role")
    local.add_argument("--out", type=Path, required=True)
    local.add_argument("--hosts", nargs="*", default=None,
                       help=f"names every role's certificate carries (default: {' '.join(LOOPBACK_HOSTS)})")


def run(args: argparse.Namespace) -> int:
    from mpcvit import pki

    step = args.step or "local"
    if step == "ca":
        written = pki.create_ca(args.out)
        logger.info("CA: %s (private, 0600) and %s", *written)
    elif step == "request":
        written = pki.create_request(args.role, args.out, args.hosts)
        logger.info("%s: wrote %s; send %s to the CA operator, keep the rest here",
                    args.role, ", ".join(map(str, written)), written[1])
    elif step == "sign":
        pki.sign_file(args.ca, args.csr, args.role, args.out)
        logger.info("send %s and %s to %s", args.out, args.ca / "ca.pem", args.role)
    else:
        if args.out is None:
            raise ValueError("give a step (ca, request, sign, local) or --out DIR for the local set-up")
        dirs = pki.create_local(args.out, hosts=args.hosts)
        for role, directory in dirs.items():
            logger.info("%-11s %s", role, directory)
    return 0
